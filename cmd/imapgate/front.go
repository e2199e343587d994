package main

import "github.com/spf13/cobra"

// Placeholder until the front lands (issue 4).
func newFrontCmd() *cobra.Command {
	return &cobra.Command{Use: "front", Short: "the mTLS IMAPS front (not built yet)"}
}
