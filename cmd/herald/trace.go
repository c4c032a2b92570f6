package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// traceCmd prints every log line about a message: the lines that carry its
// queue ID, and the lines of the SMTP session that brought it in.
func (e *cmdEnv) traceCmd(args []string) error {
	cfg, pos, err := e.flags("trace", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: herald trace ID", errUsage)
	}
	id := pos[0]
	if cfg.Log.File == "" {
		return fmt.Errorf("log.file is not set: logs go to stderr; grep them for %s", id)
	}
	sessions := map[string]bool{}
	sessionRe := regexp.MustCompile(`session[=":]+([A-Za-z0-9]+)`)
	// Pass 1: the sessions in which the message appears.
	if err := scanLines(cfg.Log.File, func(line string) {
		if strings.Contains(line, id) {
			if m := sessionRe.FindStringSubmatch(line); m != nil {
				sessions[m[1]] = true
			}
		}
	}); err != nil {
		return err
	}
	found := false
	err = scanLines(cfg.Log.File, func(line string) {
		match := strings.Contains(line, id)
		if !match {
			if m := sessionRe.FindStringSubmatch(line); m != nil && sessions[m[1]] {
				match = true
			}
		}
		if match {
			found = true
			fmt.Fprintln(e.stdout, line)
		}
	})
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("no log lines mention %s in %s", id, cfg.Log.File)
	}
	return nil
}

func scanLines(path string, f func(string)) error {
	fh, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		f(sc.Text())
	}
	return sc.Err()
}
