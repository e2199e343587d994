package main

import "github.com/spf13/cobra"

// Placeholder until the pkcs11 work lands (issue 3).
func newTokenCmd() *cobra.Command {
	return &cobra.Command{Use: "token", Short: "smartcard and YubiKey operations (not built yet)"}
}
