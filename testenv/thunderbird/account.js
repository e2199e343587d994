// Stores the mailbox password and creates an IMAP account
// (testenv.Thunderbird.AddIMAPAccount). arguments[0]: {host, port, user, password}
const [arg, done] = [arguments[0], arguments[arguments.length - 1]];

// Thunderbird looks the password up by origin and realm "imap://HOST" (no
// port) and the user name.
const origin = "imap://" + arg.host;
const login = Cc["@mozilla.org/login-manager/loginInfo;1"].createInstance(Ci.nsILoginInfo);
login.init(origin, null, origin, arg.user, arg.password, "", "");
Services.logins.addLoginAsync(login).then(() => {
  const server = MailServices.accounts.createIncomingServer(arg.user, arg.host, "imap");
  server.port = arg.port;
  server.socketType = Ci.nsMsgSocketType.SSL;
  server.authMethod = Ci.nsMsgAuthMethod.passwordCleartext;
  // Keep messages for offline use (Account Settings → Synchronization & Storage).
  server.offlineDownload = true;
  server.QueryInterface(Ci.nsIImapIncomingServer).offlineDownload = true;
  const identity = MailServices.accounts.createIdentity();
  identity.email = arg.user;
  const account = MailServices.accounts.createAccount();
  account.addIdentity(identity);
  account.incomingServer = server;
  done(server.key);
}, e => done({ error: String(e) }));
