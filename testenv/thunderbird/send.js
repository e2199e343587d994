// Sends one message through an SMTP submission server (testenv.Thunderbird.SendMail),
// as a user's "Send" does once the composer has built the message: an outgoing
// server (SSL/TLS, normal password, the mailbox's user name) tied to an identity,
// the password in the login manager for smtp://HOST, then the outgoing server's
// sendMailMessage with the message file.
// arguments[0]: {host, port, user, password, from, to, raw, messageId}
//
// As with sync.js, the work outlives this script (a PIN prompt ends it): the result
// goes to window.imapgateTest.send, which sendresult.js reads back.
const [arg, done] = [arguments[0], arguments[arguments.length - 1]];
if (window.imapgateTest.sendStarted) {
  done("started");
  return;
}
window.imapgateTest.sendStarted = true;
window.imapgateTest.send = null;

(async () => {
  const origin = "smtp://" + arg.host;
  const login = Cc["@mozilla.org/login-manager/loginInfo;1"].createInstance(Ci.nsILoginInfo);
  login.init(origin, null, origin, arg.user, arg.password, "", "");
  await Services.logins.addLoginAsync(login);

  const server = MailServices.outgoingServer.createServer("smtp");
  const smtp = server.QueryInterface(Ci.nsISmtpServer);
  smtp.hostname = arg.host;
  smtp.port = arg.port;
  server.socketType = Ci.nsMsgSocketType.SSL;
  server.authMethod = Ci.nsMsgAuthMethod.passwordCleartext;
  server.username = arg.user;

  const identity = MailServices.accounts.createIdentity();
  identity.email = arg.from;
  identity.smtpServerKey = server.key;
  const account = MailServices.accounts.accounts.find(a => a.incomingServer?.username === arg.user);
  if (account) account.addIdentity(identity);

  const file = Services.dirsvc.get("TmpD", Ci.nsIFile);
  file.append("imapgate-test-message.eml");
  file.createUnique(Ci.nsIFile.NORMAL_FILE_TYPE, 0o600);
  const out = Cc["@mozilla.org/network/file-output-stream;1"].createInstance(Ci.nsIFileOutputStream);
  out.init(file, -1, 0o600, 0);
  out.write(arg.raw, arg.raw.length);
  out.close();

  const recipients = MailServices.headerParser.parseEncodedHeaderW(arg.to);
  return await new Promise(resolve => {
    server.sendMailMessage(file, recipients, [], identity, arg.from, null, null, false, arg.messageId, {
      QueryInterface: ChromeUtils.generateQI(["nsIMsgOutgoingListener"]),
      onSendStart() {},
      onSendStop(uri, exitCode, secInfo, errMsg) {
        resolve({ ok: Components.isSuccessCode(exitCode), status: "0x" + (exitCode >>> 0).toString(16), error: errMsg || "" });
      },
    });
  });
})().then(r => { window.imapgateTest.send = r; },
  e => { window.imapgateTest.send = { ok: false, status: "script", error: String(e) + " " + (e.stack || "") }; });
done("started");
