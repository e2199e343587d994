// Prepares a fresh profile for the end-to-end tests (testenv.Thunderbird.Setup).
// arguments[0]: {module, moduleName, token, pin, pinAnswers, roots: [base64 DER], prefs}
const [arg, done] = [arguments[0], arguments[arguments.length - 1]];
// The smartcard: NSS loads the PKCS#11 module as a security device, as
// Settings → Privacy & Security → Security Devices → Load does.
const modules = Cc["@mozilla.org/security/pkcs11moduledb;1"].getService(Ci.nsIPKCS11ModuleDB);
modules.addModule(arg.moduleName, arg.module, 0, 0);

// The roots the front's certificate chains to, trusted for servers ("C,,").
const certdb = Cc["@mozilla.org/security/x509certdb;1"].getService(Ci.nsIX509CertDB);
for (const der of arg.roots) {
  certdb.addCertFromBase64(der, "C,,");
}
for (const [k, v] of Object.entries(arg.prefs || {})) {
  if (typeof v === "boolean") Services.prefs.setBoolPref(k, v);
  else if (typeof v === "number") Services.prefs.setIntPref(k, v);
  else Services.prefs.setStringPref(k, String(v));
}

// Every dialog is recorded; the card's PIN prompt is answered (at most
// pinAnswers times), alerts are accepted, everything else is cancelled.
const state = { dialogs: [], pinLeft: arg.pinAnswers };
window.imapgateTest = state;
const text = (doc, id) => (doc.getElementById(id)?.textContent || "").trim();
const visible = el => el && !el.hidden && !el.closest("[hidden]") && !el.collapsed;
Services.obs.addObserver({
  observe(subject) {
    const win = subject;
    const doc = win.document;
    const dialog = doc.querySelector("dialog");
    const d = { kind: "other", title: (doc.title || text(doc, "infoTitle")), text: text(doc, "infoBody"), action: "recorded" };
    const pass = doc.getElementById("password1Textbox");
    const login = doc.getElementById("loginTextbox");
    const promptPass = visible(pass) && !visible(login);
    const all = (d.title + " " + d.text);
    if (promptPass && arg.token && all.includes(arg.token)) {
      d.kind = "pin";
    } else if (visible(pass)) {
      d.kind = "password";
    } else if (!dialog?.getButton("cancel") || dialog.getButton("cancel").hidden) {
      d.kind = "alert";
    } else {
      d.kind = "confirm";
    }
    state.dialogs.push(d);
    win.setTimeout(() => {
      if (d.kind === "pin" && state.pinLeft > 0) {
        state.pinLeft--;
        pass.value = arg.pin;
        d.action = "pin";
        dialog.acceptDialog();
      } else if (d.kind === "alert") {
        d.action = "accept";
        dialog.acceptDialog();
      } else {
        d.action = "cancel";
        dialog.cancelDialog();
      }
    }, 0);
  },
}, "common-dialog-loaded");

// Alerts handed to the mail session (the IMAP [ALERT] texts among them)
// are recorded as well; returning false lets Thunderbird show them.
MailServices.mailSession.addUserFeedbackListener({
  QueryInterface: ChromeUtils.generateQI(["nsIMsgUserFeedbackListener"]),
  onAlert(message, url) {
    state.dialogs.push({ kind: "feedback", title: String(url?.spec || ""), text: message, action: "recorded" });
    return false;
  },
});
done(null);
