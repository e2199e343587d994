// Command imapgate is the one binary of imapgate: the CA, the mTLS IMAPS front, the
// help desk enrollment UI and the admin and token tools, as subcommands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal starts a graceful stop (the front drains); after
		// it, the default action is back, so a second one ends the process.
		<-ctx.Done()
		stop()
	}()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		if isUsageError(err) {
			fmt.Fprintln(os.Stderr, "imapgate:", oneLine(err))
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "imapgate:", err)
		os.Exit(1)
	}
}
