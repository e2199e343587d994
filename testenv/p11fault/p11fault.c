/*
 * p11fault: a PKCS#11 module for tests. It loads a real module (SoftHSM2,
 * from $P11FAULT_MODULE) and forwards every C_* call through that module's
 * CK_FUNCTION_LIST, except where the control file ($P11FAULT_CONTROL) asks
 * for a fault a software token cannot produce on its own. testenv.P11Fault
 * builds it with cc and writes the control file; nothing else uses it.
 *
 * The control file's path is read at every C_Initialize, the file itself on
 * every call (it is a few bytes); a change of its content starts the fault
 * afresh. Words, separated by blanks:
 *
 *   mode=none           forward everything (also: no file)
 *   mode=pin_locked     C_Login and C_SetPIN as user: CKR_PIN_LOCKED; token
 *                       flags CKF_USER_PIN_LOCKED; a good C_InitPIN (the SO
 *                       unblocking it) clears it, as on a card
 *   mode=pin_count_low  token flags CKF_USER_PIN_COUNT_LOW (two tries left);
 *                       a wrong user PIN moves it to final_try
 *   mode=final_try      token flags COUNT_LOW|FINAL_TRY; one more wrong user
 *                       PIN locks the token (as pin_locked)
 *                       (both: a good user login or C_InitPIN resets them)
 *   mode=pin_expired    a good user login answers CKR_PIN_EXPIRED (logged in
 *                       for C_SetPIN only, as the standard says); token flags
 *                       CKF_USER_PIN_TO_BE_CHANGED; a good C_SetPIN or
 *                       C_InitPIN ends it
 *   mode=remove_after   after=N further counted calls the token is pulled
 *                       out: the real sessions are closed (as a reader does),
 *                       C_GetSlotList(TRUE) omits it, slot calls answer
 *                       CKR_TOKEN_NOT_PRESENT and session calls rv
 *   mode=memory_full    C_GenerateKeyPair and C_CreateObject answer
 *                       CKR_DEVICE_MEMORY; the token reports no free memory
 *   mode=hidden         the token is out now (remove_after with after=0,
 *                       before any call); writing another mode inserts it
 *   after=N             see remove_after (default 0)
 *   on=C_X,C_Y          count only these calls (remove_after), or fail only
 *                       these (memory_full); default every call on a slot or
 *                       session
 *   rv=0xB3             what session calls answer once the token is out
 *                       (default CKR_DEVICE_REMOVED, 0x32)
 *   seq=N               ignored: lets the writer restart the same fault
 *
 * Every slot of the real module is affected alike: tests have one token.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

enum mode { M_NONE, M_PIN_LOCKED, M_PIN_COUNT_LOW, M_FINAL_TRY, M_PIN_EXPIRED, M_REMOVE_AFTER, M_MEMORY_FULL, M_HIDDEN };

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t loaded = PTHREAD_ONCE_INIT;
static CK_FUNCTION_LIST *real;
static char control[4096];
static char seen[1024];       /* the control file's content last parsed */
static enum mode mode;
static long after;
static char on[512];          /* ",C_X,C_Y," or "" */
static CK_RV gone_rv = CKR_DEVICE_REMOVED;
static int removed, locked;
static unsigned long gen;     /* counts the control file's changes */

static void load(void)
{
	const char *path = getenv("P11FAULT_MODULE");
	void *h;
	CK_C_GetFunctionList get;

	if (path == NULL || (h = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "p11fault: cannot load $P11FAULT_MODULE %s: %s\n", path ? path : "(unset)", dlerror());
		return;
	}
	get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
	if (get == NULL || get(&real) != CKR_OK)
		real = NULL;
}

/* pull_out closes every real session, as pulling a card out does. */
static void pull_out(void)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;

	removed = 1;
	if (real->C_GetSlotList(CK_FALSE, slots, &n) != CKR_OK)
		return;
	for (i = 0; i < n; i++)
		real->C_CloseAllSessions(slots[i]);
}

/* reload parses the control file if its content changed. Called locked. */
static void reload(void)
{
	char buf[sizeof seen] = "", *w, *save = NULL;
	FILE *f;
	size_t n = 0;

	if (control[0] != '\0' && (f = fopen(control, "r")) != NULL) {
		n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	if (strcmp(buf, seen) == 0)
		return;
	memcpy(seen, buf, sizeof seen);
	gen++;
	mode = M_NONE, after = 0, on[0] = '\0', gone_rv = CKR_DEVICE_REMOVED, removed = 0, locked = 0;
	for (w = strtok_r(buf, " \t\r\n", &save); w != NULL; w = strtok_r(NULL, " \t\r\n", &save)) {
		if (strcmp(w, "mode=pin_locked") == 0)
			mode = M_PIN_LOCKED;
		else if (strcmp(w, "mode=pin_count_low") == 0)
			mode = M_PIN_COUNT_LOW;
		else if (strcmp(w, "mode=final_try") == 0)
			mode = M_FINAL_TRY;
		else if (strcmp(w, "mode=pin_expired") == 0)
			mode = M_PIN_EXPIRED;
		else if (strcmp(w, "mode=remove_after") == 0)
			mode = M_REMOVE_AFTER;
		else if (strcmp(w, "mode=memory_full") == 0)
			mode = M_MEMORY_FULL;
		else if (strcmp(w, "mode=hidden") == 0)
			mode = M_HIDDEN;
		else if (strncmp(w, "after=", 6) == 0)
			after = strtol(w + 6, NULL, 10);
		else if (strncmp(w, "on=", 3) == 0)
			snprintf(on, sizeof on, ",%s,", w + 3);
		else if (strncmp(w, "rv=", 3) == 0)
			gone_rv = strtoul(w + 3, NULL, 0);
	}
	locked = mode == M_PIN_LOCKED;
	if (mode == M_HIDDEN)
		pull_out();
}

static int listed(const char *fn)
{
	char key[64];

	if (on[0] == '\0')
		return 1;
	snprintf(key, sizeof key, ",%s,", fn);
	return strstr(on, key) != NULL;
}

/* state is what a wrapper needs to decide, copied under the lock. */
struct state {
	enum mode mode;
	int removed, locked, listed;
	CK_RV gone_rv;
	unsigned long gen;
};

/* step re-reads the control file and, for a call on a slot or session
 * (counted), counts it towards remove_after. */
static struct state step(const char *fn, int counted)
{
	struct state s;

	pthread_mutex_lock(&mu);
	reload();
	if (counted && mode == M_REMOVE_AFTER && !removed && listed(fn)) {
		if (after <= 0)
			pull_out();
		else
			after--;
	}
	s.mode = mode, s.removed = removed, s.locked = locked, s.listed = listed(fn), s.gone_rv = gone_rv, s.gen = gen;
	pthread_mutex_unlock(&mu);
	return s;
}

/* set_mode changes the fault from inside (a login that locks or resets),
 * unless the control file changed since the call's step. */
static void set_mode(const struct state *s, enum mode m, int lock)
{
	pthread_mutex_lock(&mu);
	if (s->gen == gen)
		mode = m, locked = lock;
	pthread_mutex_unlock(&mu);
}

#define NOT_LOADED if (real == NULL) return CKR_GENERAL_ERROR

/* SESSION forwards a call on a session, or fails it once the token is out;
 * SESSION_IF checks more first (FULL: a full token fails the call). */
#define SESSION_IF(name, check, params, args)            \
	static CK_RV f_##name params                     \
	{                                                \
		struct state fs;                         \
		NOT_LOADED;                              \
		fs = step(#name, 1);                     \
		if (fs.removed)                          \
			return fs.gone_rv;               \
		check;                                   \
		return real->name args;                  \
	}
#define SESSION(name, params, args) SESSION_IF(name, (void)0, params, args)
#define FULL if (fs.mode == M_MEMORY_FULL && fs.listed) return CKR_DEVICE_MEMORY

/* SLOT forwards a call on a slot, or says the token is not present. */
#define SLOT(name, params, args)                         \
	static CK_RV f_##name params                   \
	{                                                \
		struct state fs;                          \
		NOT_LOADED;                              \
		fs = step(#name, 1);                      \
		if (fs.removed)                           \
			return CKR_TOKEN_NOT_PRESENT;    \
		return real->name args;                  \
	}

static CK_RV f_C_Initialize(void *args)
{
	const char *ctl = getenv("P11FAULT_CONTROL");

	pthread_once(&loaded, load);
	NOT_LOADED;
	/* Each test has its own control file: take it at every start. */
	pthread_mutex_lock(&mu);
	snprintf(control, sizeof control, "%s", ctl ? ctl : "");
	seen[0] = '\0';
	mode = M_NONE, removed = 0, locked = 0, gen++;
	pthread_mutex_unlock(&mu);
	return real->C_Initialize(args);
}

static CK_RV f_C_Finalize(void *r)
{
	NOT_LOADED;
	return real->C_Finalize(r);
}

static CK_RV f_C_GetInfo(CK_INFO *info)
{
	NOT_LOADED;
	return real->C_GetInfo(info);
}

static CK_RV f_C_GetSlotList(CK_BBOOL present, CK_SLOT_ID *list, CK_ULONG *count)
{
	NOT_LOADED;
	if (present && step("C_GetSlotList", 0).removed) {
		*count = 0;
		return CKR_OK;
	}
	return real->C_GetSlotList(present, list, count);
}

static CK_RV f_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO *info)
{
	struct state s;
	CK_RV rv;

	NOT_LOADED;
	s = step("C_GetSlotInfo", 1);
	rv = real->C_GetSlotInfo(slot, info);
	if (rv == CKR_OK && s.removed)
		info->flags &= ~CKF_TOKEN_PRESENT;
	return rv;
}

static CK_RV f_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO *info)
{
	struct state s;
	CK_RV rv;

	NOT_LOADED;
	s = step("C_GetTokenInfo", 1);
	if (s.removed)
		return CKR_TOKEN_NOT_PRESENT;
	rv = real->C_GetTokenInfo(slot, info);
	if (rv != CKR_OK || !(info->flags & CKF_TOKEN_INITIALIZED))
		return rv;
	if (s.locked) {
		info->flags &= ~CKF_USER_PIN_FINAL_TRY;
		info->flags |= CKF_USER_PIN_LOCKED | CKF_USER_PIN_COUNT_LOW;
	} else if (s.mode == M_FINAL_TRY) {
		info->flags |= CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY;
	} else if (s.mode == M_PIN_COUNT_LOW) {
		info->flags |= CKF_USER_PIN_COUNT_LOW;
	} else if (s.mode == M_PIN_EXPIRED) {
		info->flags |= CKF_USER_PIN_TO_BE_CHANGED;
	}
	if (s.mode == M_MEMORY_FULL)
		info->ulFreePublicMemory = info->ulFreePrivateMemory = 0;
	return rv;
}

static CK_RV f_C_GetFunctionList(CK_FUNCTION_LIST **list);

SLOT(C_GetMechanismList, (CK_SLOT_ID slot, CK_MECHANISM_TYPE *l, CK_ULONG *n), (slot, l, n))
SLOT(C_GetMechanismInfo, (CK_SLOT_ID slot, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO *i), (slot, t, i))
SLOT(C_InitToken, (CK_SLOT_ID slot, CK_UTF8CHAR *pin, CK_ULONG n, CK_UTF8CHAR *label), (slot, pin, n, label))
SLOT(C_OpenSession, (CK_SLOT_ID slot, CK_FLAGS fl, void *app, CK_NOTIFY cb, CK_SESSION_HANDLE *sh), (slot, fl, app, cb, sh))

static CK_RV f_C_InitPIN(CK_SESSION_HANDLE sh, CK_UTF8CHAR *pin, CK_ULONG n)
{
	struct state s;
	CK_RV rv;

	NOT_LOADED;
	s = step("C_InitPIN", 1);
	if (s.removed)
		return s.gone_rv;
	rv = real->C_InitPIN(sh, pin, n);
	/* The SO set a new user PIN: the card unblocks and resets its counter. */
	if (rv == CKR_OK && (s.mode == M_PIN_LOCKED || s.mode == M_PIN_COUNT_LOW || s.mode == M_FINAL_TRY || s.mode == M_PIN_EXPIRED))
		set_mode(&s, M_NONE, 0);
	return rv;
}

static CK_RV f_C_SetPIN(CK_SESSION_HANDLE sh, CK_UTF8CHAR *o, CK_ULONG on_, CK_UTF8CHAR *n, CK_ULONG nn)
{
	struct state s;
	CK_RV rv;

	NOT_LOADED;
	s = step("C_SetPIN", 1);
	if (s.removed)
		return s.gone_rv;
	if (s.locked)
		return CKR_PIN_LOCKED;
	rv = real->C_SetPIN(sh, o, on_, n, nn);
	if (rv == CKR_OK && s.mode == M_PIN_EXPIRED)
		set_mode(&s, M_NONE, 0); /* changed: no longer expired */
	return rv;
}

static CK_RV f_C_CloseSession(CK_SESSION_HANDLE sh)
{
	NOT_LOADED;
	step("C_CloseSession", 1);
	/* Forwarded even when out: the real session may still be open. */
	return real->C_CloseSession(sh);
}

static CK_RV f_C_CloseAllSessions(CK_SLOT_ID slot)
{
	NOT_LOADED;
	step("C_CloseAllSessions", 1);
	return real->C_CloseAllSessions(slot);
}

static CK_RV f_C_Login(CK_SESSION_HANDLE sh, CK_USER_TYPE who, CK_UTF8CHAR *pin, CK_ULONG n)
{
	struct state s;
	CK_RV rv;
	int user = who == CKU_USER || who == CKU_CONTEXT_SPECIFIC;

	NOT_LOADED;
	s = step("C_Login", 1);
	if (s.removed)
		return s.gone_rv;
	if (user && s.locked)
		return CKR_PIN_LOCKED;
	rv = real->C_Login(sh, who, pin, n);
	/* A card with three tries: count low, final try, locked. */
	if (user && s.mode == M_PIN_COUNT_LOW && rv == CKR_PIN_INCORRECT)
		set_mode(&s, M_FINAL_TRY, 0);
	else if (user && s.mode == M_FINAL_TRY && rv == CKR_PIN_INCORRECT)
		set_mode(&s, M_FINAL_TRY, 1);
	else if (user && (s.mode == M_FINAL_TRY || s.mode == M_PIN_COUNT_LOW) && rv == CKR_OK)
		set_mode(&s, M_NONE, 0); /* a good PIN resets the counter */
	else if (who == CKU_USER && s.mode == M_PIN_EXPIRED && rv == CKR_OK)
		rv = CKR_PIN_EXPIRED;
	return rv;
}

SESSION_IF(C_CreateObject, FULL, (CK_SESSION_HANDLE sh, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *o), (sh, t, n, o))
SESSION_IF(C_GenerateKeyPair, FULL,
	   (CK_SESSION_HANDLE sh, CK_MECHANISM *m, CK_ATTRIBUTE *pt, CK_ULONG pn, CK_ATTRIBUTE *vt, CK_ULONG vn,
	    CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv),
	   (sh, m, pt, pn, vt, vn, pub, priv))

static CK_RV f_C_WaitForSlotEvent(CK_FLAGS fl, CK_SLOT_ID *slot, void *r)
{
	NOT_LOADED;
	return real->C_WaitForSlotEvent(fl, slot, r);
}

typedef CK_BYTE B;
typedef CK_ULONG U;
typedef CK_SESSION_HANDLE S;
typedef CK_OBJECT_HANDLE O;
typedef CK_MECHANISM M;
typedef CK_ATTRIBUTE A;

SESSION(C_GetSessionInfo, (S s, CK_SESSION_INFO *i), (s, i))
SESSION(C_GetOperationState, (S s, B *st, U *n), (s, st, n))
SESSION(C_SetOperationState, (S s, B *st, U n, O e, O a), (s, st, n, e, a))
SESSION(C_Logout, (S s), (s))
SESSION(C_CopyObject, (S s, O o, A *t, U n, O *no), (s, o, t, n, no))
SESSION(C_DestroyObject, (S s, O o), (s, o))
SESSION(C_GetObjectSize, (S s, O o, U *n), (s, o, n))
SESSION(C_GetAttributeValue, (S s, O o, A *t, U n), (s, o, t, n))
SESSION(C_SetAttributeValue, (S s, O o, A *t, U n), (s, o, t, n))
SESSION(C_FindObjectsInit, (S s, A *t, U n), (s, t, n))
SESSION(C_FindObjects, (S s, O *o, U max, U *n), (s, o, max, n))
SESSION(C_FindObjectsFinal, (S s), (s))
SESSION(C_EncryptInit, (S s, M *m, O k), (s, m, k))
SESSION(C_Encrypt, (S s, B *d, U dn, B *e, U *en), (s, d, dn, e, en))
SESSION(C_EncryptUpdate, (S s, B *d, U dn, B *e, U *en), (s, d, dn, e, en))
SESSION(C_EncryptFinal, (S s, B *e, U *en), (s, e, en))
SESSION(C_DecryptInit, (S s, M *m, O k), (s, m, k))
SESSION(C_Decrypt, (S s, B *e, U en, B *d, U *dn), (s, e, en, d, dn))
SESSION(C_DecryptUpdate, (S s, B *e, U en, B *d, U *dn), (s, e, en, d, dn))
SESSION(C_DecryptFinal, (S s, B *d, U *dn), (s, d, dn))
SESSION(C_DigestInit, (S s, M *m), (s, m))
SESSION(C_Digest, (S s, B *d, U dn, B *g, U *gn), (s, d, dn, g, gn))
SESSION(C_DigestUpdate, (S s, B *d, U dn), (s, d, dn))
SESSION(C_DigestKey, (S s, O k), (s, k))
SESSION(C_DigestFinal, (S s, B *g, U *gn), (s, g, gn))
SESSION(C_SignInit, (S s, M *m, O k), (s, m, k))
SESSION(C_Sign, (S s, B *d, U dn, B *g, U *gn), (s, d, dn, g, gn))
SESSION(C_SignUpdate, (S s, B *d, U dn), (s, d, dn))
SESSION(C_SignFinal, (S s, B *g, U *gn), (s, g, gn))
SESSION(C_SignRecoverInit, (S s, M *m, O k), (s, m, k))
SESSION(C_SignRecover, (S s, B *d, U dn, B *g, U *gn), (s, d, dn, g, gn))
SESSION(C_VerifyInit, (S s, M *m, O k), (s, m, k))
SESSION(C_Verify, (S s, B *d, U dn, B *g, U gn), (s, d, dn, g, gn))
SESSION(C_VerifyUpdate, (S s, B *d, U dn), (s, d, dn))
SESSION(C_VerifyFinal, (S s, B *g, U gn), (s, g, gn))
SESSION(C_VerifyRecoverInit, (S s, M *m, O k), (s, m, k))
SESSION(C_VerifyRecover, (S s, B *g, U gn, B *d, U *dn), (s, g, gn, d, dn))
SESSION(C_DigestEncryptUpdate, (S s, B *d, U dn, B *e, U *en), (s, d, dn, e, en))
SESSION(C_DecryptDigestUpdate, (S s, B *e, U en, B *d, U *dn), (s, e, en, d, dn))
SESSION(C_SignEncryptUpdate, (S s, B *d, U dn, B *e, U *en), (s, d, dn, e, en))
SESSION(C_DecryptVerifyUpdate, (S s, B *e, U en, B *d, U *dn), (s, e, en, d, dn))
SESSION(C_GenerateKey, (S s, M *m, A *t, U n, O *k), (s, m, t, n, k))
SESSION(C_WrapKey, (S s, M *m, O w, O k, B *b, U *bn), (s, m, w, k, b, bn))
SESSION(C_UnwrapKey, (S s, M *m, O u, B *b, U bn, A *t, U n, O *k), (s, m, u, b, bn, t, n, k))
SESSION(C_DeriveKey, (S s, M *m, O b, A *t, U n, O *k), (s, m, b, t, n, k))
SESSION(C_SeedRandom, (S s, B *d, U n), (s, d, n))
SESSION(C_GenerateRandom, (S s, B *d, U n), (s, d, n))
SESSION(C_GetFunctionStatus, (S s), (s))
SESSION(C_CancelFunction, (S s), (s))

#define F(name) .name = f_##name
static CK_FUNCTION_LIST list = {
	.version = {2, 40},
	F(C_Initialize), F(C_Finalize), F(C_GetInfo), F(C_GetFunctionList), F(C_GetSlotList),
	F(C_GetSlotInfo), F(C_GetTokenInfo), F(C_GetMechanismList), F(C_GetMechanismInfo),
	F(C_InitToken), F(C_InitPIN), F(C_SetPIN), F(C_OpenSession), F(C_CloseSession),
	F(C_CloseAllSessions), F(C_GetSessionInfo), F(C_GetOperationState), F(C_SetOperationState),
	F(C_Login), F(C_Logout), F(C_CreateObject), F(C_CopyObject), F(C_DestroyObject),
	F(C_GetObjectSize), F(C_GetAttributeValue), F(C_SetAttributeValue), F(C_FindObjectsInit),
	F(C_FindObjects), F(C_FindObjectsFinal), F(C_EncryptInit), F(C_Encrypt), F(C_EncryptUpdate),
	F(C_EncryptFinal), F(C_DecryptInit), F(C_Decrypt), F(C_DecryptUpdate), F(C_DecryptFinal),
	F(C_DigestInit), F(C_Digest), F(C_DigestUpdate), F(C_DigestKey), F(C_DigestFinal),
	F(C_SignInit), F(C_Sign), F(C_SignUpdate), F(C_SignFinal), F(C_SignRecoverInit),
	F(C_SignRecover), F(C_VerifyInit), F(C_Verify), F(C_VerifyUpdate), F(C_VerifyFinal),
	F(C_VerifyRecoverInit), F(C_VerifyRecover), F(C_DigestEncryptUpdate),
	F(C_DecryptDigestUpdate), F(C_SignEncryptUpdate), F(C_DecryptVerifyUpdate),
	F(C_GenerateKey), F(C_GenerateKeyPair), F(C_WrapKey), F(C_UnwrapKey), F(C_DeriveKey),
	F(C_SeedRandom), F(C_GenerateRandom), F(C_GetFunctionStatus), F(C_CancelFunction),
	F(C_WaitForSlotEvent),
};

static CK_RV f_C_GetFunctionList(CK_FUNCTION_LIST **l)
{
	pthread_once(&loaded, load);
	NOT_LOADED;
	if (l == NULL)
		return CKR_ARGUMENTS_BAD;
	*l = &list;
	return CKR_OK;
}

/* The one exported symbol: callers reach the rest through the list. */
__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST **l)
{
	return f_C_GetFunctionList(l);
}
