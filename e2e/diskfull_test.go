package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// mountTmpfs mounts a size-limited tmpfs, or skips the test when that is
// not possible (not root, no mount permission).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// A full disk answers 452 4.3.1, loses nothing already accepted, and
// Herald accepts mail again by itself once space returns.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	fs := mountTmpfs(t, "6m")
	h := startHerald(t, func(c *config.Config) {
		c.Server.DataDir = filepath.Join(fs, "data")
		c.Limits.MaxMessageSize = 4 << 20
	})
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{})
	// The remote defers everything, so accepted mail stays on the full disk.
	mx.SetRcptReply("bob@remote.test", 451, [3]int{4, 2, 0}, "later")

	c := dial(t, h.addr("submission"))
	c.ok(250, "EHLO client.test")
	c.startTLS()
	c.ok(250, "EHLO client.test")
	if code, _ := c.authPlain("alice@example.com", pw); code != 235 {
		t.Fatal("auth")
	}
	big := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", 3000) // ~220 KB
	var accepted []string
	full := false
	for i := range 100 {
		// Near the limit the refusal may come at MAIL FROM already
		// (limits.queue_min_free) or when the message does not fit.
		if code, msg := c.cmd("MAIL FROM:<alice@example.com>"); code != 250 {
			if code != 452 || !strings.HasPrefix(msg, "4.3.1") {
				t.Fatalf("MAIL FROM on a nearly full disk: %d %s, want 452 4.3.1", code, msg)
			}
			full = true
			break
		}
		c.ok(250, "RCPT TO:<bob@remote.test>")
		c.ok(354, "DATA")
		c.raw(fmt.Sprintf("Subject: fill %d\r\nX-Token: fill-%d\r\n\r\n%s.\r\n", i, i, big))
		code, msg := c.reply()
		if code == 250 {
			accepted = append(accepted, fmt.Sprintf("fill-%d", i))
			continue
		}
		if code != 452 || !strings.HasPrefix(msg, "4.3.1") {
			t.Fatalf("on a full disk got %d %s, want 452 4.3.1", code, msg)
		}
		full = true
		break
	}
	if !full {
		t.Fatal("the disk never filled")
	}
	if len(accepted) == 0 {
		t.Fatal("nothing accepted before the disk filled")
	}
	// Space returns when the remote starts accepting and the queue drains;
	// every acknowledged message arrives intact.
	mx.SetRcptReply("bob@remote.test", 0, [3]int{}, "")
	got := mx.WaitMessages(t, len(accepted), 30*time.Second)
	seen := map[string]bool{}
	for _, m := range got {
		if mm := tokenRe.FindSubmatch(m.Body); mm != nil {
			seen[string(mm[1])] = true
			if !strings.Contains(string(m.Body), big) {
				t.Errorf("%s corrupted", mm[1])
			}
		}
	}
	for _, tok := range accepted {
		if !seen[tok] {
			t.Errorf("accepted message %s lost", tok)
		}
	}
	h.waitQueueEmpty()
	// With the queue drained the space is back: Herald accepts again by itself.
	code, msg := c.send("alice@example.com", []string{"bob@remote.test"}, "Subject: after\r\n\r\nok\r\n")
	if code != 250 {
		t.Fatalf("after space returned: %d %s", code, msg)
	}
	if _, err := os.Stat(filepath.Join(fs, "data")); err != nil {
		t.Fatal(err)
	}
}
