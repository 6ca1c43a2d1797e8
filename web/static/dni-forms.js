// calltrack dni-forms.js: website form submissions as leads (loaded by dni.js on sites with data-forms).
// data-forms="marked": only <form data-calltrack-form>; "all": every form. A form or field marked
// data-calltrack-ignore is left out. Never sent: password, hidden and file inputs, fields named or
// autocompleted as card, expiry, CVV, IBAN, SSN, PIN, one-time code, token or secret, and any value
// that is a payment card number (Luhn). Nothing at all with Do-Not-Track or Global Privacy Control.
(function () {
"use strict";
var d = document, w = window, n = navigator;
var me = d.currentScript;
if (!me || !w.fetch || !w.JSON) return;
if (n.doNotTrack === "1" || w.doNotTrack === "1" || n.msDoNotTrack === "1" || n.globalPrivacyControl === true) return;
var account = me.getAttribute("data-account"), mode = me.getAttribute("data-forms");
var base = me.src.replace(/\/dni-forms\.js(\?.*)?$/, "");
if (mode !== "marked" && mode !== "all") return;
var SECRET = /pass|pwd|card|cc[-_ ]?(num|no|exp|csc|cvv|cvc|name)|cvv|cvc|csc|security[-_ ]?code|expir|iban|routing|account[-_ ]?n(o|um)|ssn|social[-_ ]?sec|otp|one[-_ ]?time|token|secret|^pin$/i;
var SKIP = /^(password|hidden|file|submit|button|reset|image)$/;
function luhn(v) {
var x = v.replace(/[\s\-]/g, ""), s = 0;
if (!/^\d{13,19}$/.test(x)) return false;
for (var i = 0; i < x.length; i++) {
var k = +x.charAt(x.length - 1 - i);
if (i % 2) k = k > 4 ? k * 2 - 9 : k * 2;
s += k;
}
return s % 10 === 0;
}
function fields(f) {
var out = {}, count = 0;
for (var i = 0; i < f.elements.length && count < 50; i++) {
var el = f.elements[i], t = (el.type || "").toLowerCase(), name = el.name || el.id;
var ac = (el.getAttribute("autocomplete") || "").toLowerCase();
if (!name || el.disabled || SKIP.test(t) || el.hasAttribute("data-calltrack-ignore")) continue;
if (/^cc-|password|one-time-code/.test(ac) || SECRET.test(name)) continue;
if ((t === "checkbox" || t === "radio") && !el.checked) continue;
var v = t === "select-multiple" ? [].map.call(el.selectedOptions || [], function (o) { return o.value; }).join(", ") : String(el.value || "");
v = v.slice(0, 2000);
if (!v || luhn(v)) continue;
// a card number written inside a message is masked before it leaves the page
v = v.replace(/\d(?:[ \-]?\d){12,18}/g, function (m) { return luhn(m) ? "[card number]" : m; });
if (out[name]) out[name] += ", " + v;
else { out[name] = v; count++; }
}
return count ? out : null;
}
function capture(e) {
var f = e.target;
if (!f || f.tagName !== "FORM" || f.hasAttribute("data-calltrack-ignore")) return;
if (mode === "marked" && !f.hasAttribute("data-calltrack-form")) return;
var got = fields(f);
if (!got) return;
var state = w.calltrackDni && w.calltrackDni.state ? w.calltrackDni.state() : {};
if (state.privacy) return;
var body = {account: account, session: state.session || null, url: location.href,
form: f.getAttribute("name") || f.id || null, fields: got};
// keepalive: the page usually goes away as the form is sent; text/plain: no CORS preflight
fetch(base + "/dni/v1/form", {method: "POST", body: JSON.stringify(body), headers: {"Content-Type": "text/plain"},
credentials: "omit", keepalive: true}).catch(function () {});
}
d.addEventListener("submit", capture, true);
})();
