// Syncs INBOX with its bodies offline (testenv.Thunderbird.SyncInbox), as a
// user's "Get Messages" with "Keep messages for this account on this computer":
// discover the folders, update INBOX, download all of it for offline use, then
// list its messages with what the offline store holds.
// arguments[0]: {server: key}
//
// The work outlives this script: WebDriver ends a script with null as soon as
// a prompt opens (NSS's PIN prompt does), so the result goes to
// window.imapgateTest.sync, which syncresult.js reads back.
const [arg, done] = [arguments[0], arguments[arguments.length - 1]];
if (window.imapgateTest.syncStarted) {
  // Asked again after a dialog interrupted the first call: it runs already.
  done("started");
  return;
}
window.imapgateTest.syncStarted = true;
window.imapgateTest.sync = null;
const server = MailServices.accounts.getIncomingServer(arg.server);
const root = server.rootFolder;
const { NetUtil } = ChromeUtils.importESModule("resource://gre/modules/NetUtil.sys.mjs");
const msgWindow = window.msgWindow || null; // the main window's: alerts become dialogs

const run = (step, start) => new Promise((resolve, reject) => {
  start({
    QueryInterface: ChromeUtils.generateQI(["nsIUrlListener"]),
    OnStartRunningUrl() {},
    OnStopRunningUrl(url, status) {
      if (Components.isSuccessCode(status)) resolve();
      else reject({ step, status: "0x" + (status >>> 0).toString(16) });
    },
  });
});

(async () => {
  await run("discover", l => MailServices.imap.discoverAllFolders(root, l, msgWindow));
  const inbox = root.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox)?.QueryInterface(Ci.nsIMsgImapMailFolder);
  if (!inbox) throw { step: "discover", status: "no INBOX" };
  await run("update", l => inbox.updateFolderWithListener(msgWindow, l));
  await run("download", l => inbox.downloadAllForOffline(l, msgWindow));
  const out = [];
  for (const hdr of inbox.msgDatabase.enumerateMessages()) {
    const offline = (hdr.flags & Ci.nsMsgMessageFlags.Offline) !== 0 && inbox.hasMsgOffline(hdr.messageKey);
    out.push({
      subject: hdr.mime2DecodedSubject,
      messageId: hdr.messageId,
      offline,
      raw: offline ? NetUtil.readInputStreamToString(inbox.getMsgInputStream(hdr, {}), hdr.offlineMessageSize) : "",
    });
  }
  return { ok: true, inbox: out };
})().then(r => { window.imapgateTest.sync = r; },
  e => { window.imapgateTest.sync = { ok: false, step: e.step || "script", status: e.status || String(e) + " " + (e.stack || "") }; });
done("started");
