// calltrack dni.js: shows this visit's tracking number in place of the business's number.
// Loaded with <script async src=".../dni.js" data-account="KEY" [data-replace="+14045550100,..."]
// [data-attrs="data-phone ..."] [data-debug]>.  The service answers which digit sequences to find
// (each way the business number is written) and what to put in their place; the script swaps no
// other number.  A number may be split across inline elements of one block (<span>, <strong>, <br>);
// its digits are replaced in place, so the page's markup stays.  tel: targets in href and onclick,
// and the attributes named by data-attrs, are swapped the same way: shown and dialled agree.
// Same-origin iframes and open shadow roots are walked too; the walk runs in slices of a few ms.
// Do-Not-Track / Global Privacy Control: no cookie, no session, the source's own number.
// Service unreachable: the page keeps its numbers.  data-debug (or ?calltrack_debug=1) says why.
(function () {
"use strict";
var C = /*CONFIG*/{};
var d = document, w = window, n = navigator;
var me = d.currentScript || d.querySelector("script[data-account]");
if (!me || !w.fetch || !w.JSON) return;
var account = me.getAttribute("data-account");
var base = me.src.replace(/\/dni\.js(\?.*)?$/, "");
var debug = me.hasAttribute("data-debug") || /[?&]calltrack_debug=1/.test(location.search);
var privacy = n.doNotTrack === "1" || w.doNotTrack === "1" || n.msDoNotTrack === "1" || n.globalPrivacyControl === true;
var listed = list(me.getAttribute("data-replace"), ",");
var marked = list(me.getAttribute("data-attrs"), /[\s,]+/);
var SEL = "[href*='tel:' i],[onclick*='tel:' i]" + marked.map(function (a) { return ",[" + a + "]"; }).join("");
// digits -> [digits to put, whole text or null]; longest key length
var map = null, most = 0, last = null, keys = null;
var shown = null, session = null, timer = null, observer = null;
var queue = [], writes = [], busy = false, told = false, mine = new WeakMap(), framed = new WeakSet(), count = 0;
var SKIP = {SCRIPT: 1, STYLE: 1, NOSCRIPT: 1, TEXTAREA: 1, INPUT: 1, SELECT: 1, OPTION: 1, TEMPLATE: 1, svg: 1, math: 1};
var INLINE = {};
"A ABBR B BDI BDO BIG BR CITE CODE DATA DFN EM FONT I KBD LABEL MARK NOBR Q S SAMP SMALL SPAN STRONG SUB SUP TIME TT U VAR WBR".split(" ").forEach(function (t) { INLINE[t] = 1; });
// between two digit groups of one number: spaces of any width, brackets, dots, dashes, slashes
var GAP = /^[\s().\-\u2010-\u2015\/]{1,4}$/;
var TEL = /(tel:)([+\d\s().\-\u2010-\u2015\/%]+)/gi;

function list(v, sep) {
return (v || "").split(sep).map(function (x) { return x.trim(); }).filter(Boolean);
}
function log(m) {
if (debug && w.console) console.info("calltrack dni.js: " + m);
}
function now() {
return w.performance ? performance.now() : Date.now();
}
// on the page's performance timeline: when the answer came, when every number was swapped
function mark(m) {
if (w.performance && performance.mark) performance.mark("calltrack:" + m);
}
// matches in s: [start, end, [put, text]].  A number is whole digit groups; it does not go on
// into a group joined by a dash or dot (404-555-0100-1), nor start within an international
// number (+1 493-090-1820 holds no 49 30 901820)
function find(s) {
var g = [], re = /\d+/g, m, out = [], i, j;
while ((m = re.exec(s))) {
var gap = g.length ? s.slice(g[g.length - 1][1], m.index) : "", join = g.length > 0 && GAP.test(gap);
g.push([m.index, m.index + m[0].length, join, join && !/\s/.test(gap), join ? g[g.length - 1][4] : s.charAt(m.index - 1) === "+"]);
}
for (i = 0; i < g.length; i++) {
if (g[i][3] || (g[i][2] && g[i][4]) || /\w/.test(s.charAt(g[i][0] - 1))) continue;
var acc = "", best = -1, hit;
for (j = i; j < g.length && (j === i || g[j][2]); j++) {
acc += s.slice(g[j][0], g[j][1]);
if (acc.length > most) break;
if (map[acc] && !/\w/.test(s.charAt(g[j][1])) && !(g[j + 1] && g[j + 1][3])) { best = j; hit = acc; }
}
if (best >= 0) {
out.push([g[i][0], g[best][1], map[hit]]);
i = best;
}
}
return out;
}
// what replaces each character of s that changes: index -> text; digits in place (extra digits go in the
// last group), or the whole number as text (another country's tracking number; tel: gets +digits)
function plan(s, tel) {
var ms = find(s), r = null;
for (var k = 0; k < ms.length; k++) {
var a = ms[k][0], b = ms[k][1], put = ms[k][2][0], text = ms[k][2][1], x, i = 0;
r = r || {};
if (text) {
if (/[+(]/.test(s.charAt(a - 1))) a--;
r[a] = tel ? "+" + put : text;
for (x = a + 1; x < b; x++) r[x] = "";
continue;
}
var ds = [];
for (x = a; x < b; x++) if (/\d/.test(s.charAt(x))) ds.push(x);
for (; i < ds.length; i++) r[ds[i]] = i < ds.length - 1 ? put.charAt(i) : put.slice(i);
}
return r;
}
function apply(v, r, off) {
var o = "";
for (var i = 0; i < v.length; i++) o += r[off + i] === undefined ? v.charAt(i) : r[off + i];
return o;
}
function edit(s, tel) {
var r = plan(s, tel);
return r ? apply(s, r, 0) : s;
}
// changes wait until the walk is over, then are made at once: one style and layout pass, not one a slice
function commit() {
for (var i = 0; i < writes.length; i++) {
var x = writes[i], el = x[0], a = x[1];
if ((a ? el.getAttribute(a) : el.nodeValue) !== x[2]) continue; // changed since: its own mutation is queued
mine.set(el, a ? a + x[3] : x[3]);
if (a) el.setAttribute(a, x[3]); else el.nodeValue = x[3];
count++;
}
writes = [];
}
function swapAttrs(el) {
var names = ["href", "onclick"].concat(marked);
for (var i = 0; i < names.length; i++) {
var v = el.getAttribute(names[i]);
if (!v) continue;
var nv = i > 1 ? edit(v, true) : v.replace(TEL, function (m, t, num) {
var plain = num;
try { plain = decodeURIComponent(num); } catch (e) { /* keep it */ }
var out = edit(plain, true);
return out === plain ? m : t + (plain === num ? out : encodeURI(out));
});
if (nv !== v) writes.push([el, names[i], v, nv]);
}
}
// form fields, scripts, editable areas (by attribute: isContentEditable would recompute styles)
function skipped(el) {
for (; el && el.nodeType === 1; el = el.parentNode) if (SKIP[el.tagName] || editable(el)) return true;
return false;
}
function editable(el) {
var v = el.getAttribute("contenteditable");
return v !== null && v !== "false";
}
function blockOf(el) {
while (INLINE[el.tagName] && el.parentNode && el.parentNode.nodeType === 1) el = el.parentNode;
return el;
}
// the text of one block as one string (inline elements joined, <br> as a line break), swapped
function likely(b) {
return keys.test(b.textContent.replace(/\D/g, ""));
}
function swapBlock(b) {
// most blocks with digits hold none of the numbers: their digits, run together, contain no key
if (!likely(b)) return;
var wk = (b.ownerDocument || b).createTreeWalker(b, 5), nd = wk.nextNode(), parts = [], s = "";
function flush() {
var r = /\d/.test(s) && plan(s, false);
if (r) for (var i = 0, off = 0; i < parts.length; off += parts[i++].v.length) {
var p = parts[i], nv = apply(p.v, r, off);
if (p.n && nv !== p.v) writes.push([p.n, null, p.v, nv]);
}
parts = []; s = "";
}
while (nd) {
if (nd.nodeType === 1) {
var t = nd.tagName;
if (t === "BR") { parts.push({n: null, v: "\n"}); s += "\n"; }
else if (SKIP[t] || !INLINE[t] || editable(nd)) {
flush();
nd = after(nd, b);
if (nd) wk.currentNode = nd;
continue;
}
} else if (nd.nodeType === 3) {
parts.push({n: nd, v: nd.nodeValue});
s += nd.nodeValue;
}
nd = wk.nextNode();
}
flush();
}
function after(x, root) {
for (; x && x !== root; x = x.parentNode) if (x.nextSibling) return x.nextSibling;
return null;
}
function frame(f) {
var doc;
try { doc = f.contentDocument; } catch (e) { return; }
if (!framed.has(f)) {
framed.add(f);
f.addEventListener("load", function () { frame(f); });
}
if (doc && doc.documentElement) { observe(doc); push(doc); }
}
function host(el) {
if (el.shadowRoot) { observe(el.shadowRoot); push(el.shadowRoot); }
if (el.tagName === "IFRAME") frame(el);
}
function observe(root) {
if (observer) observer.observe(root, {childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ["href", "onclick"].concat(marked)});
}
// work: {r: root to walk} or {b: one block}; done in slices of at most ~8 ms
function push(root, isBlock) {
queue.push(isBlock ? {b: root} : {r: root});
if (!busy) { busy = true; later(); }
}
var channel = w.MessageChannel ? new MessageChannel() : null;
if (channel) channel.port1.onmessage = pump;
function later() {
if (channel) channel.port2.postMessage(0); else setTimeout(pump, 0);
}
function pump() {
var end = now() + 8;
while (queue.length) {
var job = queue[0];
if (job.b) { queue.shift(); if (job.b.isConnected) swapBlock(job.b); }
else if (!walk(job, end)) break;
if (now() > end) break;
}
if (queue.length) later();
else if (busy) {
commit();
busy = false;
mark("swapped");
if (!told) log(count ? count + " texts and links swapped" : "none of the numbers to replace is on this page");
told = true;
}
}
// one slice of a walk; true when the walk is over
function walk(job, end) {
if (!job.w) {
var r = job.r, doc = r.ownerDocument || r;
job.w = doc.createTreeWalker(r, 5);
job.done = new Set();
if (r.querySelectorAll) {
var els = r.querySelectorAll(SEL);
for (var i = 0; i < els.length; i++) swapAttrs(els[i]);
}
if (r.nodeType === 1) { if (r.matches(SEL)) swapAttrs(r); host(r); }
}
var wk = job.w, nd = job.nd === undefined ? wk.nextNode() : job.nd, k = 0;
while (nd) {
if (nd.nodeType === 1) {
var t = nd.tagName;
if (SKIP[t]) {
nd = after(nd, job.r);
if (nd) wk.currentNode = nd;
continue;
}
host(nd);
} else if (nd.nodeType === 3 && /\d/.test(nd.nodeValue) && nd.parentNode && nd.parentNode.nodeType === 1) {
var b = blockOf(nd.parentNode);
// the ancestors are looked at only for blocks that may hold a number
if (!job.done.has(b)) { job.done.add(b); if (likely(b) && !skipped(nd.parentNode)) swapBlock(b); }
}
nd = wk.nextNode();
if (++k % 200 === 0 && now() > end) { job.nd = nd; return false; }
}
queue.shift();
return true;
}
function watch() {
if (observer || !w.MutationObserver) return;
observer = new MutationObserver(function (records) {
for (var i = 0; i < records.length; i++) {
var r = records[i], t = r.target;
if (r.type === "attributes") { if (mine.get(t) !== r.attributeName + t.getAttribute(r.attributeName)) swapAttrs(t); }
else if (r.type === "characterData") { if (mine.get(t) !== t.nodeValue && t.parentNode && t.parentNode.nodeType === 1) push(blockOf(t.parentNode), 1); }
else for (var j = 0; j < r.addedNodes.length; j++) {
var a = r.addedNodes[j];
if (a.nodeType === 1) push(a);
if ((a.nodeType === 3 || INLINE[a.tagName]) && t.nodeType === 1) push(blockOf(t), 1);
}
}
});
observe(d.documentElement);
}
function cookie(value) {
var m = d.cookie.match(new RegExp("(?:^|; )" + C.cookie + "=([A-Za-z0-9_\\-]{8,64})"));
if (value === undefined) return m ? m[1] : null;
d.cookie = C.cookie + "=" + value + "; max-age=" + C.cookieDays * 86400 + "; path=/; SameSite=Lax" +
(location.protocol === "https:" ? "; Secure" : "");
}
function post(path, body, done) {
var ctl = w.AbortController ? new AbortController() : null;
var t = ctl && setTimeout(function () { ctl.abort(); }, 5000);
// text/plain keeps the request "simple": no CORS preflight round trip
fetch(base + path + (debug ? "?debug=1" : ""), {method: "POST", body: JSON.stringify(body), headers: {"Content-Type": "text/plain"},
credentials: "omit", keepalive: path.indexOf("heartbeat") > 0, signal: ctl ? ctl.signal : undefined})
.then(function (r) { return r.json().then(function (j) { return {s: r.status, j: j}; }); })
.then(function (x) {
if (t) clearTimeout(t);
if (x.s !== 200) log(path + " answered " + x.s + ": " + (x.j && x.j.error));
done(x.s, x.j);
})
.catch(function (e) {
if (t) clearTimeout(t);
// unreachable: the page keeps its numbers
log(path + " failed (" + e + "): the service is unreachable, or refused this origin (" + location.origin +
"), which is then not a site of the account: calltrack sites add ACCOUNT --origin " + location.origin);
});
}
function show(a) {
if (a.unreadable) log("not phone numbers in this site's region: " + a.unreadable.join(", "));
if (!a.number) { log("no number for this visit (no source rule matched)"); return; }
if (!a.swap || !a.swap.length) { log("no numbers to replace: name them with sites add --replace or data-replace"); return; }
if (shown && shown.e164 === a.number) return;
var m = {}, byFrom = {};
a.swap.forEach(function (s) { m[s.from] = [s.to, s.text || null]; byFrom[s.from] = s; });
// numbers shown before (a new lease after the old one ended) are replaced too, form by form
if (last) last.forEach(function (s) { if (byFrom[s.from] && !m[s.to]) m[s.to] = [byFrom[s.from].to, byFrom[s.from].text || null]; });
last = a.swap;
map = m;
most = 0;
for (var k in m) most = Math.max(most, k.length);
keys = new RegExp(Object.keys(m).join("|"));
shown = {e164: a.number, display: a.display || a.number};
mark("answer");
// while the page is still being parsed, one walk once it is whole costs less than one per parsed node
if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", go);
else go();
}
function go() {
mark("walk");
watch();
push(d);
}
function start() {
if (!account) log("the script tag has no data-account (the snippet printed by calltrack sites add)");
if (privacy) log("Do-Not-Track or Global Privacy Control is on: no cookie, the source's own number");
var body = {account: account, visitor: privacy ? null : cookie(), url: location.href,
referrer: d.referrer || "", dnt: privacy, replace: listed};
post("/dni/v1/session", body, function (status, a) {
if (status !== 200) return;
if (!privacy && a.visitor) cookie(a.visitor);
session = a.session;
show(a);
if (session && !timer) timer = setInterval(beat, C.heartbeat * 1000);
});
}
function beat() {
if (!session) return;
post("/dni/v1/heartbeat", {account: account, session: session, replace: listed}, function (status, a) {
if (status === 410) { session = null; start(); return; }
if (status === 200) show(a);
});
}
// Form leads, opt-in per site (data-forms="marked" or "all"): web/static/dni-forms.js, loaded only then
var FORMS = me.getAttribute("data-forms");
if (!privacy && /^(marked|all)$/.test(FORMS || "")) {
var fs = d.createElement("script");
fs.async = true; fs.src = base + "/dni-forms.js"; fs.nonce = me.nonce || "";
fs.setAttribute("data-account", account); fs.setAttribute("data-forms", FORMS);
(d.head || d.documentElement).appendChild(fs);
}
w.calltrackDni = {
swap: function () { if (map) push(d); },
state: function () { return {session: session, shown: shown, privacy: privacy, busy: busy, swapped: count}; }
};
start();
})();
