package pkcs11

// This file holds a FAKE of Yubico's ykcs11 (libykcs11.so), the only fake in
// this package's tests: CI has no YubiKey, and SoftHSM2 follows none of the
// rules below. It models what ykcs11 2.2.0 does according to its source and
// docs (see /work/shared/notes/pkcs11.md §4): key generation and certificate
// import only after an SO login with the management key, signing only after
// a user login, CKA_ID picking the PIV slot, template whitelists that reject
// CKA_EXTRACTABLE and CKA_MODIFIABLE, fixed labels, a PIN that locks after
// three wrong tries, no C_InitPIN, unblock through C_SetPIN("puk:…","pin:…").
// Behaviour on real hardware is NOT verified by these tests.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"math/big"
	"strings"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

const (
	fakeYKPIN    = "123456"
	fakeYKPUK    = "12345678"
	fakeYKMgmKey = "010203040506070801020304050607080102030405060708"
	fakeYKLabel  = "YubiKey PIV #20112233"
	fakeYKSerial = "20112233"
)

type fakeYKObject struct {
	class uint
	attrs map[uint][]byte
	key   crypto.Signer
}

type fakeYK struct {
	mu         sync.Mutex
	pin, puk   string
	pinTries   int
	login      uint // noLogin, CKU_USER, CKU_SO
	objs       map[p11.ObjectHandle]*fakeYKObject
	next       p11.ObjectHandle
	found      []p11.ObjectHandle
	signKey    p11.ObjectHandle
	signMech   uint
	calls      []string // "op:who" log for assertions
	unplugged  bool     // pcscd runs, no YubiKey: ykcs11 reports no slots
	rejections []string
}

func newFakeYK() *fakeYK {
	return &fakeYK{pin: fakeYKPIN, puk: fakeYKPUK, pinTries: 3, login: noLogin, objs: map[p11.ObjectHandle]*fakeYKObject{}, next: 1}
}

func (f *fakeYK) record(op string) {
	w := "nobody"
	switch f.login {
	case p11.CKU_USER:
		w = "user"
	case p11.CKU_SO:
		w = "so"
	}
	f.calls = append(f.calls, op+":"+w)
}

func (f *fakeYK) Initialize(...p11.InitializeOption) error { return nil }
func (f *fakeYK) Finalize() error                          { return nil }
func (f *fakeYK) Destroy()                                 {}
func (f *fakeYK) GetInfo() (p11.Info, error) {
	return p11.Info{ManufacturerID: "Yubico (www.yubico.com)", LibraryDescription: "PKCS#11 PIV Library (SP-800-73)",
		CryptokiVersion: p11.Version{Major: 2, Minor: 40}, LibraryVersion: p11.Version{Major: 2, Minor: 2}}, nil
}
func (f *fakeYK) GetSlotList(bool) ([]uint, error) {
	if f.unplugged {
		return nil, nil
	}
	return []uint{0}, nil
}
func (f *fakeYK) GetTokenInfo(uint) (p11.TokenInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := uint(p11.CKF_RNG | p11.CKF_LOGIN_REQUIRED | p11.CKF_USER_PIN_INITIALIZED | p11.CKF_TOKEN_INITIALIZED)
	switch {
	case f.pinTries == 0:
		fl |= p11.CKF_USER_PIN_LOCKED
	case f.pinTries == 1:
		fl |= p11.CKF_USER_PIN_FINAL_TRY | p11.CKF_USER_PIN_COUNT_LOW
	case f.pinTries < 3:
		fl |= p11.CKF_USER_PIN_COUNT_LOW
	}
	return p11.TokenInfo{Label: fakeYKLabel, ManufacturerID: "Yubico (www.yubico.com)", Model: "YubiKey YK5",
		SerialNumber: fakeYKSerial, Flags: fl, MinPinLen: 6, MaxPinLen: 48}, nil
}
func (f *fakeYK) GetMechanismList(uint) ([]*p11.Mechanism, error) { return nil, nil }
func (f *fakeYK) OpenSession(uint, uint) (p11.SessionHandle, error) {
	return 1, nil
}
func (f *fakeYK) CloseSession(p11.SessionHandle) error { return nil }

func (f *fakeYK) Login(_ p11.SessionHandle, userType uint, pin string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.login == userType {
		return p11.Error(p11.CKR_USER_ALREADY_LOGGED_IN)
	}
	if f.login != noLogin {
		return p11.Error(p11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
	}
	switch userType {
	case p11.CKU_USER:
		if f.pinTries == 0 {
			return p11.Error(p11.CKR_PIN_LOCKED)
		}
		if pin != f.pin {
			f.pinTries--
			if f.pinTries == 0 {
				return p11.Error(p11.CKR_PIN_LOCKED)
			}
			return p11.Error(p11.CKR_PIN_INCORRECT)
		}
		f.pinTries = 3
	case p11.CKU_SO:
		if !strings.EqualFold(pin, fakeYKMgmKey) {
			return p11.Error(p11.CKR_PIN_INCORRECT)
		}
	default:
		return p11.Error(p11.CKR_USER_TYPE_INVALID)
	}
	f.login = userType
	return nil
}

func (f *fakeYK) Logout(p11.SessionHandle) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.login == noLogin {
		return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
	}
	f.login = noLogin
	return nil
}

func (f *fakeYK) InitPIN(p11.SessionHandle, string) error {
	return p11.Error(p11.CKR_FUNCTION_NOT_SUPPORTED)
}

func (f *fakeYK) SetPIN(_ p11.SessionHandle, old, newPIN string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if puk, ok := strings.CutPrefix(old, "puk:"); ok {
		np, ok := strings.CutPrefix(newPIN, "pin:")
		if !ok {
			return p11.Error(p11.CKR_ARGUMENTS_BAD)
		}
		if puk != f.puk {
			return p11.Error(p11.CKR_PIN_INCORRECT)
		}
		if len(np) < 6 || len(np) > 8 {
			return p11.Error(p11.CKR_PIN_LEN_RANGE)
		}
		// Clone: the PIN strings alias buffers the caller wipes (a C module copies them too).
		f.pin, f.pinTries = strings.Clone(np), 3
		return nil
	}
	if f.login != p11.CKU_USER {
		return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
	}
	if old != f.pin {
		return p11.Error(p11.CKR_PIN_INCORRECT)
	}
	if len(newPIN) < 6 || len(newPIN) > 8 {
		return p11.Error(p11.CKR_PIN_LEN_RANGE)
	}
	f.pin = strings.Clone(newPIN)
	return nil
}

// ykcs11 2.2.0's template whitelists.
var (
	fakeYKPubAllowed  = attrSet(p11.CKA_CLASS, p11.CKA_KEY_TYPE, p11.CKA_PUBLIC_EXPONENT, p11.CKA_MODULUS_BITS, p11.CKA_EC_PARAMS, p11.CKA_ID, p11.CKA_SENSITIVE, p11.CKA_TOKEN, p11.CKA_ENCRYPT, p11.CKA_VERIFY, p11.CKA_WRAP, p11.CKA_DERIVE, p11.CKA_PRIVATE, p11.CKA_LABEL, p11.CKA_SUBJECT)
	fakeYKPrivAllowed = attrSet(p11.CKA_CLASS, p11.CKA_KEY_TYPE, p11.CKA_ID, p11.CKA_SENSITIVE, p11.CKA_DECRYPT, p11.CKA_UNWRAP, p11.CKA_SIGN, p11.CKA_PRIVATE, p11.CKA_TOKEN, p11.CKA_DERIVE, p11.CKA_LABEL, p11.CKA_SUBJECT)
	fakeYKCertAllowed = attrSet(p11.CKA_CLASS, p11.CKA_ID, p11.CKA_VALUE, p11.CKA_TOKEN, p11.CKA_LABEL, p11.CKA_SUBJECT, p11.CKA_ISSUER, p11.CKA_CERTIFICATE_TYPE, p11.CKA_PRIVATE, p11.CKA_SERIAL_NUMBER)
)

func attrSet(ts ...uint) map[uint]bool {
	m := map[uint]bool{}
	for _, t := range ts {
		m[t] = true
	}
	return m
}

func (f *fakeYK) check(kind string, tmpl []*p11.Attribute, allowed map[uint]bool) (map[uint][]byte, error) {
	m := map[uint][]byte{}
	for _, a := range tmpl {
		if !allowed[a.Type] {
			f.rejections = append(f.rejections, kind)
			return nil, p11.Error(p11.CKR_ATTRIBUTE_TYPE_INVALID)
		}
		m[a.Type] = a.Value
	}
	return m, nil
}

// fakeYKSlotLabel is ykcs11's fixed naming; only 9a is modelled.
var fakeYKSlotLabel = map[byte]string{1: "PIV Authentication", 2: "Digital Signature", 3: "Key Management", 4: "Card Authentication"}

func ulongBytes(v uint) []byte {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint64(b, uint64(v))
	return b
}

func (f *fakeYK) GenerateKeyPair(_ p11.SessionHandle, m []*p11.Mechanism, pubT, privT []*p11.Attribute) (p11.ObjectHandle, p11.ObjectHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("generate")
	if f.login != p11.CKU_SO {
		return 0, 0, p11.Error(p11.CKR_USER_TYPE_INVALID)
	}
	pub, err := f.check("public key template", pubT, fakeYKPubAllowed)
	if err != nil {
		return 0, 0, err
	}
	priv, err := f.check("private key template", privT, fakeYKPrivAllowed)
	if err != nil {
		return 0, 0, err
	}
	id := priv[p11.CKA_ID]
	if len(id) != 1 || fakeYKSlotLabel[id[0]] == "" || !bytes.Equal(pub[p11.CKA_ID], id) {
		return 0, 0, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
	}
	var key crypto.Signer
	var kt uint
	switch m[0].Mechanism {
	case p11.CKM_EC_KEY_PAIR_GEN:
		if !bytes.Equal(pub[p11.CKA_EC_PARAMS], oidP256Params) {
			return 0, 0, p11.Error(p11.CKR_CURVE_NOT_SUPPORTED)
		}
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		kt = p11.CKK_EC
	case p11.CKM_RSA_PKCS_KEY_PAIR_GEN:
		if !bytes.Equal(pub[p11.CKA_PUBLIC_EXPONENT], []byte{1, 0, 1}) {
			return 0, 0, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
		}
		bits := ulong(pub[p11.CKA_MODULUS_BITS])
		if bits != 1024 && bits != 2048 {
			return 0, 0, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
		}
		key, _ = rsa.GenerateKey(rand.Reader, int(bits))
		kt = p11.CKK_RSA
	default:
		return 0, 0, p11.Error(p11.CKR_MECHANISM_INVALID)
	}
	// A new key replaces whatever the slot held.
	f.removeIDLocked(id)
	name := fakeYKSlotLabel[id[0]]
	common := func(class uint, label string) map[uint][]byte {
		return map[uint][]byte{p11.CKA_CLASS: ulongBytes(class), p11.CKA_ID: id, p11.CKA_LABEL: []byte(label), p11.CKA_KEY_TYPE: ulongBytes(kt)}
	}
	pa := common(p11.CKO_PUBLIC_KEY, "Public key for "+name)
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		raw, _ := k.Bytes()
		pa[p11.CKA_EC_POINT], _ = asn1.Marshal(raw)
	case *rsa.PublicKey:
		pa[p11.CKA_MODULUS] = k.N.Bytes()
		pa[p11.CKA_PUBLIC_EXPONENT] = big.NewInt(int64(k.E)).Bytes()
	}
	pubH := f.add(&fakeYKObject{class: p11.CKO_PUBLIC_KEY, attrs: pa})
	privH := f.add(&fakeYKObject{class: p11.CKO_PRIVATE_KEY, attrs: common(p11.CKO_PRIVATE_KEY, "Private key for "+name), key: key})
	return pubH, privH, nil
}

func (f *fakeYK) add(o *fakeYKObject) p11.ObjectHandle {
	h := f.next
	f.next++
	f.objs[h] = o
	return h
}

func (f *fakeYK) removeIDLocked(id []byte) {
	for h, o := range f.objs {
		if bytes.Equal(o.attrs[p11.CKA_ID], id) {
			delete(f.objs, h)
		}
	}
}

func (f *fakeYK) GenerateRandom(_ p11.SessionHandle, n int) ([]byte, error) {
	b := make([]byte, n)
	_, err := rand.Read(b)
	return b, err
}

func (f *fakeYK) CreateObject(_ p11.SessionHandle, tmpl []*p11.Attribute) (p11.ObjectHandle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create")
	if f.login != p11.CKU_SO {
		return 0, p11.Error(p11.CKR_USER_TYPE_INVALID)
	}
	a, err := f.check("certificate template", tmpl, fakeYKCertAllowed)
	if err != nil {
		return 0, err
	}
	if ulong(a[p11.CKA_CLASS]) != p11.CKO_CERTIFICATE {
		return 0, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
	}
	id := a[p11.CKA_ID]
	if len(id) != 1 || fakeYKSlotLabel[id[0]] == "" {
		return 0, p11.Error(p11.CKR_ATTRIBUTE_VALUE_INVALID)
	}
	if len(a[p11.CKA_VALUE]) > 3072-9 {
		return 0, p11.Error(p11.CKR_DEVICE_MEMORY)
	}
	for h, o := range f.objs { // one certificate per slot
		if o.class == p11.CKO_CERTIFICATE && bytes.Equal(o.attrs[p11.CKA_ID], id) {
			delete(f.objs, h)
		}
	}
	a[p11.CKA_LABEL] = []byte("X.509 Certificate for " + fakeYKSlotLabel[id[0]])
	return f.add(&fakeYKObject{class: p11.CKO_CERTIFICATE, attrs: a}), nil
}

func (f *fakeYK) DestroyObject(_ p11.SessionHandle, h p11.ObjectHandle) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("destroy")
	if f.login != p11.CKU_SO {
		return p11.Error(p11.CKR_USER_TYPE_INVALID)
	}
	if _, ok := f.objs[h]; !ok {
		return p11.Error(p11.CKR_OBJECT_HANDLE_INVALID)
	}
	delete(f.objs, h)
	return nil
}

func (f *fakeYK) visible(o *fakeYKObject) bool {
	return o.class != p11.CKO_PRIVATE_KEY || f.login != noLogin
}

func (f *fakeYK) GetAttributeValue(_ p11.SessionHandle, h p11.ObjectHandle, a []*p11.Attribute) ([]*p11.Attribute, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[h]
	if !ok || !f.visible(o) {
		return nil, p11.Error(p11.CKR_OBJECT_HANDLE_INVALID)
	}
	out := make([]*p11.Attribute, len(a))
	for i, x := range a {
		if o.class == p11.CKO_PRIVATE_KEY && x.Type == p11.CKA_VALUE {
			return nil, p11.Error(p11.CKR_ATTRIBUTE_SENSITIVE)
		}
		v, ok := o.attrs[x.Type]
		if !ok {
			return nil, p11.Error(p11.CKR_ATTRIBUTE_TYPE_INVALID)
		}
		out[i] = p11.NewAttribute(x.Type, v)
	}
	return out, nil
}

func (f *fakeYK) FindObjectsInit(_ p11.SessionHandle, tmpl []*p11.Attribute) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.found = nil
next:
	for h, o := range f.objs {
		if !f.visible(o) {
			continue
		}
		for _, a := range tmpl {
			if !bytes.Equal(o.attrs[a.Type], a.Value) {
				continue next
			}
		}
		f.found = append(f.found, h)
	}
	return nil
}

func (f *fakeYK) FindObjects(_ p11.SessionHandle, max int) ([]p11.ObjectHandle, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := min(max, len(f.found))
	out := f.found[:n]
	f.found = f.found[n:]
	return out, false, nil
}

func (f *fakeYK) FindObjectsFinal(p11.SessionHandle) error { return nil }

func (f *fakeYK) SignInit(_ p11.SessionHandle, m []*p11.Mechanism, h p11.ObjectHandle) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("sign")
	if f.login != p11.CKU_USER {
		return p11.Error(p11.CKR_USER_NOT_LOGGED_IN)
	}
	if o, ok := f.objs[h]; !ok || o.key == nil {
		return p11.Error(p11.CKR_KEY_HANDLE_INVALID)
	}
	f.signKey, f.signMech = h, m[0].Mechanism
	return nil
}

func (f *fakeYK) Sign(_ p11.SessionHandle, data []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch k := f.objs[f.signKey].key.(type) {
	case *ecdsa.PrivateKey:
		if f.signMech != p11.CKM_ECDSA {
			return nil, p11.Error(p11.CKR_MECHANISM_INVALID)
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, data)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out, nil
	case *rsa.PrivateKey:
		if f.signMech != p11.CKM_RSA_PKCS {
			return nil, p11.Error(p11.CKR_MECHANISM_INVALID) // PSS params are not modelled
		}
		return rsa.SignPKCS1v15(nil, k, 0, data)
	}
	return nil, p11.Error(p11.CKR_KEY_HANDLE_INVALID)
}
