// Package local delivers mail for Herald's own domains into Maildir
// folders (aliases were expanded at acceptance, package alias).
package local

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Maildir delivers messages into Maildir folders laid out as
// root/<domain>/<local part>/{tmp,new,cur}. It is safe for concurrent use.
type Maildir struct {
	root string
	host string
	seq  atomic.Uint64
}

// NewMaildir returns a Maildir delivering under root. Directories are
// created on first delivery to a mailbox.
func NewMaildir(root string) *Maildir {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	// Maildir's convention: '/' and ':' are not allowed in the host part.
	host = strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host)
	return &Maildir{root: root, host: host}
}

var (
	errBadMailbox = smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{5, 1, 3}, Message: "Invalid local mailbox"}
)

// Envelope is what final delivery records of the SMTP envelope.
type Envelope struct {
	// ReturnPath is the envelope sender ("" for the null sender), written
	// as the Return-Path field (RFC 5321 §4.4).
	ReturnPath string
	// Folder is a Maildir++ folder of the mailbox (e.g. ".Junk") to deliver
	// into when it exists; "" or a missing folder means the inbox. Folders
	// are created by the user's mail client.
	Folder string
}

// ErrLoop is the reply to a message that already carries a Delivered-To
// field naming the mailbox: it went round a forwarding loop.
var ErrLoop = smtp.Error{Code: 554, Enhanced: smtp.EnhancedCode{5, 4, 6}, Message: "Mail forwarding loop"}

// maxLoopScan bounds the header bytes read to look for Delivered-To.
const maxLoopScan = 1 << 20

// Deliver stores body as one new message in the Maildir of mailbox
// ("user@domain"), preceded by "Return-Path: <sender>" and
// "Delivered-To: mailbox" (as Postfix's local delivery writes them). A
// message whose header already has "Delivered-To: mailbox" is refused
// (554 5.4.6, permanent): it came back through a forwarding loop. The
// bytes are stored as given (Herald passes CRLF line endings). The message
// is written to tmp/, fsynced, renamed into new/ and the new/ directory is
// fsynced: when Deliver returns nil the message is on stable storage.
//
// Every error carries an *smtp.Error (see smtp.AsError) telling the caller
// how to classify it: an invalid mailbox is permanent (550 5.1.3), a loop
// too; a full disk is temporary (452 4.3.1) and also wraps
// store.ErrStorageFull; other I/O failures and cancellation are temporary
// (451 4.3.0).
func (m *Maildir) Deliver(ctx context.Context, mailbox string, env Envelope, body io.Reader) error {
	br := bufio.NewReaderSize(body, 16<<10)
	hdr, err := headerSection(br, maxLoopScan)
	if err != nil {
		if _, ok := smtp.AsError(err); ok {
			return fmt.Errorf("local: reading message: %w", err) // the body's own verdict
		}
		return ioErr("reading message", err)
	}
	for _, f := range message.Fields(hdr) {
		if f.Is("Delivered-To") && strings.EqualFold(strings.Trim(f.Value, "<> \t"), mailbox) {
			e := ErrLoop
			e.Message += " for " + strings.ToLower(mailbox)
			return fmt.Errorf("local: %s: %w", mailbox, &e)
		}
	}
	prefix := "Return-Path: <" + env.ReturnPath + ">\r\nDelivered-To: " + strings.ToLower(mailbox) + "\r\n"
	return m.deliver(ctx, mailbox, env.Folder, prefix, io.MultiReader(bytes.NewReader(hdr), br))
}

// headerSection reads from br up to and including the blank line that ends
// the header section, at most max bytes (a longer header is only partly
// looked at), or to EOF.
func headerSection(br *bufio.Reader, max int) ([]byte, error) {
	var hdr []byte
	for len(hdr) < max {
		line, err := br.ReadSlice('\n')
		hdr = append(hdr, line...)
		switch {
		case err == nil:
			if len(line) <= 2 && strings.TrimRight(string(line), "\r\n") == "" {
				return hdr, nil
			}
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return hdr, nil
		default:
			return nil, err
		}
	}
	return hdr, nil
}

func (m *Maildir) deliver(ctx context.Context, mailbox, folder, prefix string, body io.Reader) error {
	dir, err := m.MailboxPath(mailbox)
	if err != nil {
		return err
	}
	if folder != "" && strings.HasPrefix(folder, ".") && !strings.ContainsAny(folder, "/\\\x00") {
		if fi, err := os.Stat(filepath.Join(dir, folder, "new")); err == nil && fi.IsDir() {
			dir = filepath.Join(dir, folder)
		}
	}
	if err := ctx.Err(); err != nil {
		return ioErr("delivery canceled", err)
	}
	if err := m.ensureDirs(dir); err != nil {
		return ioErr("creating maildir", err)
	}
	name := m.uniqueName()
	tmpPath := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmpPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return ioErr("creating message file", err)
	}
	closed, renamed := false, false
	defer func() {
		if !closed {
			_ = f.Close()
		}
		if !renamed {
			_ = os.Remove(tmpPath)
		}
	}()
	if _, err := io.WriteString(f, prefix); err != nil {
		return ioErr("writing message", err)
	}
	cr := &ctxReader{ctx: ctx, r: body}
	if _, err := io.Copy(f, cr); err != nil {
		if cr.err != nil {
			// The body's own error (e.g. an *smtp.Error from a strict
			// reader) is the caller's to classify; keep it first.
			if _, ok := smtp.AsError(cr.err); ok {
				return fmt.Errorf("local: reading message: %w", cr.err)
			}
			return ioErr("reading message", cr.err)
		}
		return ioErr("writing message", err)
	}
	if err := f.Sync(); err != nil {
		return ioErr("syncing message", err)
	}
	closed = true
	if err := f.Close(); err != nil {
		return ioErr("closing message", err)
	}
	if err := os.Rename(tmpPath, filepath.Join(dir, "new", name)); err != nil {
		return ioErr("moving message to new/", err)
	}
	renamed = true
	if err := syncDir(filepath.Join(dir, "new")); err != nil {
		return ioErr("syncing new/", err)
	}
	return nil
}

// MailboxPath returns the Maildir directory of mailbox without creating it.
// The domain is lower-cased and converted to its A-label form; the local
// part is lower-cased, and bytes that could escape the directory or confuse
// tools ('/', '\\', '%', a leading '.') are written as %XX, so distinct
// local parts map to distinct directories. Control characters (NUL, CR, LF)
// are refused.
// Invalid addresses return a permanent *smtp.Error (550 5.1.3).
func (m *Maildir) MailboxPath(mailbox string) (string, error) {
	at := strings.LastIndexByte(mailbox, '@')
	if at <= 0 || at == len(mailbox)-1 || !utf8.ValidString(mailbox) {
		return "", fmt.Errorf("local: mailbox %q: %w", mailbox, &errBadMailbox)
	}
	local, domain := mailbox[:at], mailbox[at+1:]
	if len(local) > smtp.MaxLocalPart {
		return "", fmt.Errorf("local: mailbox %q: local part too long: %w", mailbox, &errBadMailbox)
	}
	if strings.ContainsFunc(local, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("local: mailbox %q: control character: %w", mailbox, &errBadMailbox)
	}
	d, err := smtp.NormalizeDomain(domain)
	if err != nil || !safeDomain(d) {
		return "", fmt.Errorf("local: mailbox %q: bad domain: %w", mailbox, &errBadMailbox)
	}
	return filepath.Join(m.root, d, escapeLocal(strings.ToLower(local))), nil
}

// safeDomain accepts only LDH labels separated by single dots, so the
// domain is always one plain path element.
func safeDomain(d string) bool {
	if d == "" || d[0] == '.' || d[0] == '-' || strings.Contains(d, "..") {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func escapeLocal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '/' || c == '\\' || c == '%' || (i == 0 && c == '.') {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ensureDirs creates dir/{tmp,new,cur} if needed, fsyncing the parents of
// each directory it creates so the new entries survive a crash.
func (m *Maildir) ensureDirs(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "tmp")); err == nil {
			return nil
		}
	}
	domainDir := filepath.Dir(dir)
	for _, d := range []string{m.root, domainDir, dir} {
		created, err := mkdir(d)
		if err != nil {
			return err
		}
		if created {
			if err := syncDir(filepath.Dir(d)); err != nil {
				return err
			}
		}
	}
	createdAny := false
	for _, sub := range []string{"tmp", "new", "cur"} {
		created, err := mkdir(filepath.Join(dir, sub))
		if err != nil {
			return err
		}
		createdAny = createdAny || created
	}
	if createdAny {
		return syncDir(dir)
	}
	return nil
}

func mkdir(d string) (created bool, err error) {
	err = os.Mkdir(d, 0o700)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrExist):
		fi, serr := os.Stat(d)
		if serr != nil {
			return false, serr
		}
		if !fi.IsDir() {
			return false, fmt.Errorf("%s is not a directory", d)
		}
		return false, nil
	case errors.Is(err, os.ErrNotExist):
		// The parent is missing (root itself): create it with its parents.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return false, err
		}
		return true, nil
	default:
		return false, err
	}
}

func syncDir(d string) error {
	f, err := os.Open(d)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

var pid = strconv.Itoa(os.Getpid())

// uniqueName builds a Maildir file name: <sec>.M<usec>P<pid>R<random>Q<seq>.<host>.
func (m *Maildir) uniqueName() string {
	now := time.Now()
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return fmt.Sprintf("%d.M%06dP%sR%sQ%d.%s", now.Unix(), now.Nanosecond()/1000, pid,
		hex.EncodeToString(rnd[:]), m.seq.Add(1), m.host)
}

// ioErr classifies an I/O error: ENOSPC/EDQUOT become a storage-full
// temporary error wrapping store.ErrStorageFull; everything else a local
// temporary error.
func ioErr(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		e := smtp.ErrStorageFull
		return fmt.Errorf("local: %s: %w: %w (%w)", what, &e, store.ErrStorageFull, err)
	}
	e := smtp.ErrLocalError
	return fmt.Errorf("local: %s: %w (%w)", what, &e, err)
}

// ctxReader stops a copy when ctx is canceled and remembers the error the
// source returned, to tell read errors from write errors.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}
