// Returns the dialogs recorded since setup (testenv.Thunderbird.Dialogs).
const done = arguments[arguments.length - 1];
done((window.imapgateTest && window.imapgateTest.dialogs) || []);
