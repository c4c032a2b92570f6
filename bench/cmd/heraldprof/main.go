// Command heraldprof runs a Herald node in-process, exactly as `herald serve`
// does, while recording a CPU profile (runtime/pprof) until SIGTERM or
// SIGINT. The benchmark harness uses it with -profile to find hot spots:
//
//	go tool pprof -top heraldprof cpu.pprof
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/config"
)

func main() {
	cfgPath := flag.String("config", "", "Herald configuration file")
	cpuOut := flag.String("cpuprofile", "cpu.pprof", "CPU profile output")
	memOut := flag.String("memprofile", "", "heap profile written at exit (optional)")
	flag.Parse()
	if err := run(*cfgPath, *cpuOut, *memOut); err != nil {
		fmt.Fprintln(os.Stderr, "heraldprof:", err)
		os.Exit(1)
	}
}

func run(cfgPath, cpuOut, memOut string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	a, err := app.New(cfg, app.Options{})
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	f, err := os.Create(cpuOut)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	runErr := a.Run(ctx)
	pprof.StopCPUProfile()
	if memOut != "" {
		mf, err := os.Create(memOut)
		if err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
		defer mf.Close()
		if err := pprof.WriteHeapProfile(mf); err != nil {
			return fmt.Errorf("heap profile: %w", err)
		}
	}
	return runErr
}
