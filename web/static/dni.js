// calltrack dni.js: shows this visit's tracking number in place of the business's number.
// Loaded with <script async src=".../dni.js" data-account="KEY" [data-replace="+14045550100,..."]>.
// Without data-replace every North American number on the page is swapped.
// Do-Not-Track / Global Privacy Control: no cookie, no session, the source's own number.
// Service unreachable: the page keeps its numbers.
(function () {
"use strict";
var C = /*CONFIG*/{};
var d = document, w = window, n = navigator;
var me = d.currentScript || d.querySelector("script[data-account]");
if (!me || !w.fetch || !w.JSON) return;
var account = me.getAttribute("data-account");
var base = me.src.replace(/\/dni\.js(\?.*)?$/, "");
var privacy = n.doNotTrack === "1" || w.doNotTrack === "1" || n.msDoNotTrack === "1" || n.globalPrivacyControl === true;
// numbers to replace, as 10 national digits; empty means any
var targets = (me.getAttribute("data-replace") || "").split(",").map(nat).filter(Boolean);
var shown = null; // {digits, e164, display}
var session = null, timer = null, observer = null;
// (404) 555-0100, 404-555-0100, 404.555.0100, +1 404 555 0100, 1-404-555-0100, 4045550100 (also with
// non-breaking spaces and hyphens, and en dashes)
var RE = /(^|[^\w+])((?:\+?1[ .\-\u00a0\u2010-\u2013]?)?(?:\(\d{3}\)[ \u00a0]?|\d{3}[ .\-\u00a0\u2010-\u2013]?)\d{3}[ .\-\u00a0\u2010-\u2013]?\d{4})(?![\w])/g;
var SKIP = {SCRIPT: 1, STYLE: 1, NOSCRIPT: 1, TEXTAREA: 1, INPUT: 1, SELECT: 1, OPTION: 1, TEMPLATE: 1};

function nat(s) {
var x = String(s).replace(/\D/g, "");
if (x.length === 11 && x.charAt(0) === "1") x = x.slice(1);
return x.length === 10 ? x : "";
}
function wanted(digits) {
if (!digits || (shown && digits === shown.digits)) return false;
if (!targets.length) return true;
for (var i = 0; i < targets.length; i++) if (targets[i] === digits) return true;
return !!(shown && shown.was[digits]);
}
// the new number written the way the old one was: same separators, same country prefix
function restyle(old) {
if (!shown.digits) return shown.display;
var all = old.replace(/\D/g, "");
var put = all.length === 11 ? "1" + shown.digits : shown.digits, i = 0;
return old.replace(/\d/g, function () { return put.charAt(i++); });
}
function swapText(node) {
var v = node.nodeValue;
if (!v || v.length < 10 || !/\d{3}/.test(v)) return;
var out = v.replace(RE, function (m, pre, num) {
return wanted(nat(num)) ? pre + restyle(num) : m;
});
if (out !== v) node.nodeValue = out;
}
function swapLink(a) {
var h = a.getAttribute("href");
if (!h || h.slice(0, 4).toLowerCase() !== "tel:") return;
var num = h.slice(4);
if (!wanted(nat(decodeURIComponent(num)))) return;
var nh = "tel:" + (shown.digits ? restyle(decodeURIComponent(num)) : shown.e164);
if (nh !== h) a.setAttribute("href", nh);
}
function swap(root) {
if (!root || !shown) return;
if (root.nodeType === 3) {
if (!inSkip(root.parentNode)) swapText(root);
return;
}
if (root.nodeType !== 1 && root.nodeType !== 9 && root.nodeType !== 11) return;
if (root.nodeType === 1 && inSkip(root)) return;
if (root.nodeType === 1 && root.tagName === "A") swapLink(root);
var links = root.querySelectorAll ? root.querySelectorAll("a[href]") : [];
for (var i = 0; i < links.length; i++) swapLink(links[i]);
var walker = d.createTreeWalker(root, 4, {
acceptNode: function (t) { return inSkip(t.parentNode) ? 2 : 1; }
});
var t;
while ((t = walker.nextNode())) swapText(t);
}
function inSkip(el) {
for (; el && el.nodeType === 1; el = el.parentNode) {
if (SKIP[el.tagName] || el.isContentEditable) return true;
}
return false;
}
function watch() {
if (observer || !w.MutationObserver) return;
observer = new MutationObserver(function (records) {
for (var i = 0; i < records.length; i++) {
var r = records[i];
if (r.type === "characterData") swap(r.target);
else if (r.type === "attributes") swapLink(r.target);
else for (var j = 0; j < r.addedNodes.length; j++) swap(r.addedNodes[j]);
}
});
observer.observe(d.documentElement, {childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ["href"]});
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
fetch(base + path, {method: "POST", body: JSON.stringify(body), headers: {"Content-Type": "text/plain"},
credentials: "omit", keepalive: path.indexOf("heartbeat") > 0, signal: ctl ? ctl.signal : undefined})
.then(function (r) { return r.json().then(function (j) { return {s: r.status, j: j}; }); })
.then(function (x) { if (t) clearTimeout(t); done(x.s, x.j); })
.catch(function () { if (t) clearTimeout(t); }); // unreachable: the page keeps its numbers
}
function show(answer) {
if (!answer.number) return;
var was = {};
if (shown) { was = shown.was; was[shown.digits] = 1; }
var digits = answer.number.indexOf("+1") === 0 ? answer.number.slice(2) : "";
if (shown && shown.digits === digits) return;
// was: numbers shown before, replaced too (a new lease after the old one ended)
shown = {digits: digits, e164: answer.number, display: answer.display || answer.number, was: was};
swap(d);
watch();
}
function start() {
var body = {account: account, visitor: privacy ? null : cookie(), url: location.href,
referrer: d.referrer || "", dnt: privacy};
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
post("/dni/v1/heartbeat", {account: account, session: session}, function (status, a) {
if (status === 410) { session = null; start(); return; }
if (status === 200) show(a);
});
}
w.calltrackDni = {swap: function () { swap(d); }, state: function () { return {session: session, shown: shown, privacy: privacy}; }};
start();
})();
