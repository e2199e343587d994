package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/caclient"
	"github.com/imapgate/imapgate/pkcs11"
	"github.com/spf13/cobra"
)

// tokenFlags are the flags that name a module and a token. PINs come only
// from files: a PIN on the command line ends up in shell history and ps.
type tokenFlags struct {
	module, token      string
	pinFile, soPINFile string
}

func (f *tokenFlags) register(cmd *cobra.Command, token, pin bool) {
	cmd.Flags().StringVar(&f.module, "module", "", "PKCS#11 module: opensc-pkcs11.so, libykcs11.so, libsofthsm2.so (path)")
	_ = cmd.MarkFlagRequired("module")
	if token {
		cmd.Flags().StringVar(&f.token, "token", "", "token label or serial (see imapgate token list)")
		_ = cmd.MarkFlagRequired("token")
	}
	if pin {
		cmd.Flags().StringVar(&f.pinFile, "pin-file", "", "file whose first line is the user PIN")
	}
}

func (f *tokenFlags) registerSO(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&f.soPINFile, "so-pin-file", "", "file whose first line is the "+what)
}

// open opens the module and the token; the caller defers the returned close.
func (f *tokenFlags) open() (*pkcs11.Module, *pkcs11.Token, func(), error) {
	mod, err := pkcs11.Open(f.module)
	if err != nil {
		return nil, nil, nil, err
	}
	tok, err := mod.OpenToken(f.token)
	if err != nil {
		mod.Close()
		return nil, nil, nil, err
	}
	return mod, tok, func() { tok.Close(); mod.Close() }, nil
}

func readPIN(path, what string) (*pkcs11.PIN, error) {
	if path == "" {
		return nil, nil
	}
	p, err := pkcs11.ReadPINFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return p, nil
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "smartcards and YubiKeys: list, show, enroll a user, change or unblock the PIN, wipe",
	}
	cmd.AddCommand(newTokenListCmd(), newTokenShowCmd(), newTokenEnrollCmd(), newTokenPINCmd(), newTokenUnblockCmd(), newTokenWipeCmd())
	return cmd
}

func newTokenListCmd() *cobra.Command {
	var f tokenFlags
	cmd := &cobra.Command{
		Use:   "list --module PATH",
		Short: "list the tokens the module sees, with their PIN state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mod, err := pkcs11.Open(f.module)
			if err != nil {
				return err
			}
			defer mod.Close()
			out := cmd.OutOrStdout()
			mi := mod.Info()
			fmt.Fprintf(out, "module %s: %s %q %s (profile %s)\n", mi.Path, mi.Manufacturer, mi.Description, mi.LibraryVersion, mi.Profile)
			toks, err := mod.Tokens()
			if err != nil {
				return err
			}
			if len(toks) == 0 {
				fmt.Fprintln(out, "no token present: insert a card or YubiKey (is pcscd running?)")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LABEL\tSERIAL\tMANUFACTURER\tMODEL\tSTATE")
			for _, t := range toks {
				label := t.Label
				if label == "" {
					label = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", label, t.Serial, t.Manufacturer, t.Model, strings.Join(t.Flags.Words(), ","))
			}
			return tw.Flush()
		},
	}
	f.register(cmd, false, false)
	return cmd
}

func newTokenShowCmd() *cobra.Command {
	var f tokenFlags
	cmd := &cobra.Command{
		Use:   "show --module PATH --token LABEL [--pin-file F]",
		Short: "show a token's state and objects (private keys only with --pin-file)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pin, err := readPIN(f.pinFile, "user PIN")
			if err != nil {
				return err
			}
			defer pin.Wipe()
			_, tok, closeAll, err := f.open()
			if err != nil {
				return err
			}
			defer closeAll()
			if pin != nil {
				if err := tok.Login(pin); err != nil {
					return err
				}
			}
			ti := tok.Info()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "token %s\n  serial        %s\n  manufacturer  %s\n  model         %s\n  state         %s\n  PIN length    %d..%d\n  profile       %s\n",
				ti.Label, ti.Serial, ti.Manufacturer, ti.Model, strings.Join(ti.Flags.Words(), ","), ti.MinPINLen, ti.MaxPINLen, tok.Profile().Name)
			if ti.FreePublicMemory >= 0 {
				fmt.Fprintf(out, "  free memory   %d bytes public, %d private\n", ti.FreePublicMemory, ti.FreePrivateMemory)
			}
			objs, err := tok.Objects()
			if err != nil {
				return err
			}
			if pin == nil {
				fmt.Fprintln(out, "objects (without login; private keys hidden):")
			} else {
				fmt.Fprintln(out, "objects:")
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  CLASS\tID\tLABEL\tDETAILS")
			for _, o := range objs {
				det := ""
				if c := o.Cert; c != nil {
					det = fmt.Sprintf("subject %q serial %s not after %s", c.Subject.String(), pkcs11.SerialHex(c.SerialNumber), c.NotAfter.UTC().Format(time.RFC3339))
					if len(c.EmailAddresses) > 0 {
						det += " email " + strings.Join(c.EmailAddresses, ",")
					}
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Class, o.IDHex(), o.Label, det)
			}
			return tw.Flush()
		},
	}
	f.register(cmd, true, true)
	return cmd
}

func newTokenEnrollCmd() *cobra.Command {
	var (
		f       tokenFlags
		api     apiFlags
		user    string
		keyType string
		days    int
		noCA    bool
		oldCA   bool
		replace bool
	)
	cmd := &cobra.Command{
		Use:   "enroll --module PATH --token LABEL --pin-file F --user EMAIL --ca URL --cred DIR",
		Short: "generate a key on the token, have the CA certify it, write the certificate beside it",
		Long: `enroll generates a key pair on the token (EC P-256 unless --key-type rsa-2048),
signs a certificate request with it on the token, has the CA sign it with the
enrollment-agent credential in --cred, and writes the certificate onto the
token under the key's ID. If any step after key generation fails, the key is
removed again. A YubiKey (ykcs11) also needs --so-pin-file with the PIV
management key, and uses PIV slot 9a.

The issuing CA certificates (the intermediate and the root of the --cred
credential's roots.pem) are written onto the token too, so a mail client
that reads only the card has the chain: Thunderbird (NSS) offers a card's
certificate only when it can link it to a CA the front lists. --no-ca-certs
skips them, for tokens with little room (a YubiKey has no place for them).

A token that already holds an imapgate credential is refused unless
--replace is given; then the old key and certificate are deleted once the new
certificate is on the token, and their serials are printed for an admin to
revoke (reason superseded), and so are the CA certificates imapgate wrote
before that are not those of the new chain (an old intermediate). On a YubiKey the new key overwrites slot 9a at
once: if the enrollment then fails, the old credential is gone too, and the
error names its serial.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kt, err := pkcs11.ParseKeyType(keyType)
			if err != nil {
				return err
			}
			if f.pinFile == "" {
				return errors.New("give the user PIN in a file: --pin-file F")
			}
			cl, err := api.client()
			if err != nil {
				return err
			}
			pin, err := readPIN(f.pinFile, "user PIN")
			if err != nil {
				return err
			}
			defer pin.Wipe()
			soPIN, err := readPIN(f.soPINFile, "SO PIN")
			if err != nil {
				return err
			}
			defer soPIN.Wipe()
			var roots []*x509.Certificate
			if !noCA {
				rb, err := caclient.RootsPEM(api.credDir())
				if err != nil {
					return err
				}
				if roots, err = caclient.ParseCerts(rb); err != nil {
					return fmt.Errorf("credential roots.pem: %w", err)
				}
			}
			_, tok, closeAll, err := f.open()
			if err != nil {
				return err
			}
			defer closeAll()
			var caSerial string
			sign := func(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error) {
				resp, err := cl.Sign(ctx, caclient.SignRequest{
					CSR:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}),
					User: user, ValidityDays: days,
				})
				if err != nil {
					return nil, err
				}
				caSerial = resp.Serial
				return resp.Chain, nil
			}
			res, err := tok.Enroll(cmd.Context(), pkcs11.EnrollRequest{
				User: user, KeyType: kt, PIN: pin, SOPIN: soPIN, WriteCACerts: !noCA, Roots: roots, Replace: replace,
			}, sign)
			if err != nil {
				return err
			}
			if caSerial != "" {
				res.Serial = caSerial // the CA's spelling, as imapgate cert revoke takes it
			}
			// One audit line (stderr, JSON); the receipt goes to stdout.
			slog.Info("token enrolled", "user", res.User, "serial", res.Serial, "not_after", res.NotAfter,
				"token", res.TokenLabel, "token_serial", res.TokenSerial, "key_type", string(res.KeyType), "key_id", res.KeyIDHex())
			return printEnrollment(cmd.OutOrStdout(), res)
		},
	}
	f.register(cmd, true, true)
	f.registerSO(cmd, "SO PIN (YubiKey: the PIV management key, 48 hex digits)")
	api.register(cmd)
	cmd.Flags().StringVar(&user, "user", "", "mailbox login the certificate is for, e.g. alice@example.org")
	cmd.Flags().StringVar(&keyType, "key-type", string(pkcs11.KeyECP256), "ec-p256 or rsa-2048")
	cmd.Flags().IntVar(&days, "validity-days", 0, "certificate lifetime in days (0: the CA's default)")
	cmd.Flags().BoolVar(&noCA, "no-ca-certs", false, "do not store the CA certificates (intermediate, root) on the token")
	cmd.Flags().BoolVar(&oldCA, "write-ca-certs", false, "the default now; accepted and ignored")
	_ = cmd.Flags().MarkDeprecated("write-ca-certs", "CA certificates are written by default now (--no-ca-certs skips them)")
	cmd.MarkFlagsMutuallyExclusive("write-ca-certs", "no-ca-certs")
	cmd.Flags().BoolVar(&replace, "replace", false, "enroll a token that already holds an imapgate credential, deleting the old one")
	_ = cmd.MarkFlagRequired("user")
	return cmd
}

func printEnrollment(w io.Writer, r *pkcs11.EnrollResult) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "user\t%s\n", r.User)
	fmt.Fprintf(tw, "serial\t%s\n", r.Serial)
	fmt.Fprintf(tw, "not after\t%s\n", r.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(tw, "token\t%s\n", r.TokenLabel)
	fmt.Fprintf(tw, "token serial\t%s\n", r.TokenSerial)
	fmt.Fprintf(tw, "key\t%s, ID %s, label %s\n", r.KeyType, r.KeyIDHex(), r.Label)
	for _, c := range r.Replaced {
		fmt.Fprintf(tw, "replaced\t%s, serial %s: revoke it (imapgate cert revoke %s --reason superseded)\n",
			c.Subject.CommonName, pkcs11.SerialHex(c.SerialNumber), pkcs11.SerialHex(c.SerialNumber))
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(tw, "warning\t%s\n", w)
	}
	return tw.Flush()
}

// withPINs reads the PIN that authorizes a change and the new PIN from their
// files, opens the token and runs change; both PINs are wiped afterwards.
func withPINs(f *tokenFlags, authFile, authWhat, newFile string, change func(tok *pkcs11.Token, auth, newPIN *pkcs11.PIN) error) (string, error) {
	auth, err := readPIN(authFile, authWhat)
	if err != nil {
		return "", err
	}
	defer auth.Wipe()
	newPIN, err := readPIN(newFile, "new PIN")
	if err != nil {
		return "", err
	}
	defer newPIN.Wipe()
	_, tok, closeAll, err := f.open()
	if err != nil {
		return "", err
	}
	defer closeAll()
	return tok.Label(), change(tok, auth, newPIN)
}

func newTokenPINCmd() *cobra.Command {
	var f tokenFlags
	var newPINFile string
	cmd := &cobra.Command{
		Use:   "pin --module PATH --token LABEL --pin-file OLD --new-pin-file NEW",
		Short: "change the user PIN",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.pinFile == "" || newPINFile == "" {
				return errors.New("give the current and the new PIN in files: --pin-file OLD --new-pin-file NEW")
			}
			label, err := withPINs(&f, f.pinFile, "current PIN", newPINFile, (*pkcs11.Token).ChangePIN)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "PIN of token %s changed\n", label)
			return nil
		},
	}
	f.register(cmd, true, true)
	cmd.Flags().StringVar(&newPINFile, "new-pin-file", "", "file whose first line is the new PIN")
	return cmd
}

func newTokenUnblockCmd() *cobra.Command {
	var f tokenFlags
	var newPINFile string
	cmd := &cobra.Command{
		Use:   "unblock --module PATH --token LABEL --so-pin-file F --new-pin-file NEW",
		Short: "set a new user PIN with the SO PIN (YubiKey: with the PUK), e.g. after a lock-out",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.soPINFile == "" || newPINFile == "" {
				return errors.New("give the SO PIN (YubiKey: PUK) and the new PIN in files: --so-pin-file F --new-pin-file NEW")
			}
			label, err := withPINs(&f, f.soPINFile, "SO PIN", newPINFile, (*pkcs11.Token).ResetPIN)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new user PIN set on token %s: hand it to the user in person, and have them change it (imapgate token pin)\n", label)
			return nil
		},
	}
	f.register(cmd, true, false)
	f.registerSO(cmd, "SO PIN (YubiKey: the PUK)")
	cmd.Flags().StringVar(&newPINFile, "new-pin-file", "", "file whose first line is the new user PIN")
	return cmd
}

func newTokenWipeCmd() *cobra.Command {
	var f tokenFlags
	var yes bool
	cmd := &cobra.Command{
		Use:   "wipe --module PATH --token LABEL --pin-file F",
		Short: "remove imapgate's keys and certificates from a token, after confirmation",
		Long: `wipe lists the objects imapgate wrote (labels starting "imapgate", and the keys
and certificates sharing their IDs; on a YubiKey, PIV slot 9a), asks you to type
the token label to confirm, and deletes them. Other objects stay. Revoke the
certificates first (imapgate cert revoke): wiping does not revoke.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.pinFile == "" {
				return errors.New("give the user PIN in a file (--pin-file F): private keys are invisible without it")
			}
			pin, err := readPIN(f.pinFile, "user PIN")
			if err != nil {
				return err
			}
			defer pin.Wipe()
			soPIN, err := readPIN(f.soPINFile, "SO PIN")
			if err != nil {
				return err
			}
			defer soPIN.Wipe()
			_, tok, closeAll, err := f.open()
			if err != nil {
				return err
			}
			defer closeAll()
			if err := tok.Login(pin); err != nil {
				return err
			}
			plan, err := tok.WipePlan()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(plan) == 0 {
				fmt.Fprintf(out, "token %s holds no imapgate objects\n", tok.Label())
				return nil
			}
			fmt.Fprintf(out, "token %s (serial %s): these objects will be deleted:\n", tok.Label(), tok.Info().Serial)
			for _, o := range plan {
				det := ""
				if o.Cert != nil {
					det = " " + o.Cert.Subject.String() + " serial " + pkcs11.SerialHex(o.Cert.SerialNumber)
				}
				fmt.Fprintf(out, "  %-12s %s %s%s\n", o.Class, o.IDHex(), o.Label, det)
			}
			if !yes {
				// The label, or the serial for a token without one: an
				// empty answer must never confirm.
				want, what := tok.Label(), "label"
				if strings.TrimSpace(want) == "" {
					want, what = tok.Info().Serial, "serial"
				}
				fmt.Fprintf(out, "type the token %s (%s) to confirm: ", what, want)
				line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(want) == "" || strings.TrimSpace(line) != strings.TrimSpace(want) {
					return errors.New("not confirmed: nothing deleted")
				}
			}
			if tok.Profile().SOForWrite {
				if soPIN == nil {
					return errors.New("this token deletes only after an SO login: give --so-pin-file (YubiKey: the management key)")
				}
				if err := tok.LoginSO(soPIN); err != nil {
					return err
				}
			}
			n, err := tok.Wipe(plan)
			fmt.Fprintf(out, "deleted %d of %d objects from token %s\n", n, len(plan), tok.Label())
			return err
		},
	}
	f.register(cmd, true, true)
	f.registerSO(cmd, "SO PIN (YubiKey: the management key), for tokens that need it to delete")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	return cmd
}
