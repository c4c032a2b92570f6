package main

import (
	"strings"
	"testing"
)

// The queue-depth benchmark's -v output gives one result per depth and the
// plans logged before the deepest one.
func TestParseDepthOutput(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/heraldmail/herald/internal/store/sqlite
cpu: Oxide Virtual Turin-like Processor             
BenchmarkQueueDepth
BenchmarkQueueDepth/depth=DEPTH
    queue_depth_bench_test.go:228: filled in 40ms; query plans at depth DEPTH (after ANALYZE; without statistics where different):
          enqueue: message:        (no table read)
          enqueue: recipient:      (no table read)
          enqueue: accepted event: (no table read)
          lease: candidates:       SEARCH recipients USING INDEX recipients_ready (<expr><?)
          lease: message:          SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id=?)
          lease: recipients:       SEARCH recipients USING INDEX recipients_message (message_id=?)
          renew:                   SEARCH recipients USING INDEX recipients_message (message_id=?)
          outcome: message:        SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id=?)
          outcome: recipient:      SEARCH recipients USING INTEGER PRIMARY KEY (rowid=?)
          outcome: event:          (no table read)
          outcome: count pending:  SEARCH recipients USING INDEX recipients_message (message_id=?)
          delete: recipients:      SEARCH recipients USING INDEX recipients_message (message_id=?)
          delete: message:         SEARCH messages USING INDEX sqlite_autoindex_messages_1 (id=?)
          next due:                SEARCH recipients USING INDEX recipients_ready
BenchmarkQueueDepth/depth=DEPTH-2         	    1000	    476151 ns/op	       378.3 cpu-µs/msg	       171.3 done-cpu-µs/msg	       212.4 done-µs/msg	       137.3 enqueue-cpu-µs/msg	       183.2 enqueue-µs/msg	         0.04047 fill-s	        69.67 lease-cpu-µs/msg	        74.72 lease-µs/msg	       100.0 msgs/lease	      2126 msgs/s
PASS
ok  	github.com/heraldmail/herald/internal/store/sqlite	0.648s
`
	both := strings.ReplaceAll(out, "DEPTH", "1000") + strings.ReplaceAll(out, "DEPTH", "1000000")
	res, plans := parseDepthOutput("SQLite", []byte(both))
	if len(res) != 2 || res[0].depth != 1000 || res[1].depth != 1000000 {
		t.Fatalf("results %+v", res)
	}
	for _, unit := range []string{"cpu-µs/msg", "enqueue-µs/msg", "lease-µs/msg", "done-µs/msg", "msgs/s", "fill-s"} {
		if res[1].metrics[unit] <= 0 {
			t.Errorf("no %s in %v", unit, res[1].metrics)
		}
	}
	if !strings.HasPrefix(plans, "query plans at depth 1000000") || !strings.Contains(plans, "next due:") ||
		!strings.Contains(plans, "recipients_ready") || strings.Contains(plans, "BenchmarkQueueDepth") {
		t.Errorf("plans:\n%s", plans)
	}
	pg := strings.Join([]string{
		"        query plans at depth 1000:",
		"        lease candidates:",
		"        Limit (actual time=1.399..1.455 rows=100 loops=1)",
		"          Buffers: shared hit=426",
		"          ->  Index Scan using recipients_ready on recipients r (actual time=0.016..0.221 rows=400 loops=1)",
		"                Index Cond: (x <= $1)",
		"BenchmarkQueueDepth/depth=1000-2 \t 10 \t 5 ns/op \t 3 msgs/s",
	}, "\n")
	_, plans = parseDepthOutput("PostgreSQL", []byte(pg))
	want := "query plans at depth 1000:\nlease candidates:\nLimit (actual time=1.399..1.455 rows=100 loops=1)\n" +
		"  ->  Index Scan using recipients_ready on recipients r (actual time=0.016..0.221 rows=400 loops=1)"
	if plans != want {
		t.Errorf("PostgreSQL plans:\n%s\nwant\n%s", plans, want)
	}
	if group(1000000) != "1,000,000" || group(100) != "100" {
		t.Errorf("group: %s %s", group(1000000), group(100))
	}
}
