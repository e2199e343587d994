// Command frontprof runs the front exactly as `imapgate front --config FILE` does
// (mtls.Run), plus Go's net/http/pprof on a loopback address, so that the benchmark
// (scripts/bench.sh) can take a CPU profile of the front under load. The shipped front
// has no profiling endpoint; this binary exists only for measurement.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	"github.com/imapgate/imapgate/mtls"
)

func main() {
	cfg := flag.String("config", "", "the front's YAML configuration (docs/front.md)")
	pprofAddr := flag.String("pprof", "127.0.0.1:9938", "loopback address of /debug/pprof/")
	flag.Parse()
	go func() {
		if err := http.ListenAndServe(*pprofAddr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "frontprof: pprof:", err)
		}
	}()
	// The same logger as `imapgate front` (JSON on stderr, level info).
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := mtls.Run(ctx, *cfg, nil, log); err != nil {
		fmt.Fprintln(os.Stderr, "frontprof:", err)
		os.Exit(1)
	}
}
