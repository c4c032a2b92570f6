package dkim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
)

// DefaultHeaderKeys are the header fields signed when present (every
// instance), in the spirit of RFC 6376 section 5.4.1. A name ending in "*"
// matches every field with that prefix.
var DefaultHeaderKeys = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-*",
	"In-Reply-To", "References", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Message-ID", "Sender",
}

// DefaultOversign are the fields listed once more than they occur, so that
// another instance cannot be added without breaking the signature.
var DefaultOversign = []string{"From"}

// bufPool recycles the buffers in front of the signers' pipes.
var bufPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// releaseBuf returns the write buffer to the pool.
func (s *Signer) releaseBuf() {
	if s.bw != nil {
		s.bw.Reset(nil)
		bufPool.Put(s.bw)
		s.bw = nil
	}
}

// DefaultMaxHeaderBytes bounds the header block a Signer buffers.
const DefaultMaxHeaderBytes = 1 << 20

// SignOptions tune a Signer. The zero value is valid.
type SignOptions struct {
	// Expiration, when positive, adds x= that long after the signing time.
	Expiration time.Duration
	// HeaderKeys are the fields signed when present; nil means
	// DefaultHeaderKeys. From is always signed.
	HeaderKeys []string
	// Oversign are fields listed once more than they occur; nil means
	// DefaultOversign.
	Oversign []string
	// MaxHeaderBytes bounds the header block; zero means
	// DefaultMaxHeaderBytes. A longer header fails the signing.
	MaxHeaderBytes int
	// Now returns the current time for x=; nil means time.Now. (t= is set
	// by go-msgauth from the system clock.)
	Now func() time.Time
}

// ErrNoKeys is returned by NewSigner when it is given no key.
var ErrNoKeys = errors.New("dkim: no signing key")

var errSignerDone = errors.New("dkim: signer already finished")

// signKey is one key ready to sign.
type signKey struct {
	domain, selector string
	key              parsedKey
}

// Signer computes DKIM signatures of a message streamed through it, one per
// key. Write the whole message (header and body, CRLF line endings) to it,
// for example with io.MultiWriter beside the spool file, then call Headers.
// Like a hash.Hash, Write never fails: a signing failure is reported by
// Headers, so that a tee never aborts the message it copies. Call Headers
// or Close exactly once to release the signer's goroutines. A Signer is not
// safe for concurrent use.
type Signer struct {
	keys       []signKey
	selectKeys KeySelector // chooses keys at the end of the header, if set
	opts       SignOptions

	hdr     []byte // header block buffered until its end is seen
	started bool   // signers created and hdr written to them
	sigs    []*msgauth.Signer
	bw      *bufio.Writer // in front of the signers' pipes
	err     error
	done    bool
}

// Key is a signing key: Domain is the signature's d=, Selector its s=,
// PrivateKey a PKCS#8 PEM key (RSA or Ed25519).
type Key struct {
	Domain     string
	Selector   string
	PrivateKey []byte
}

// NewSigner returns a Signer using keys (typically the active keys of the
// From domain). The keys are decoded once and cached.
func NewSigner(keys []Key, opts SignOptions) (*Signer, error) {
	if len(keys) == 0 {
		return nil, ErrNoKeys
	}
	s := newSigner(opts)
	if err := s.setKeys(keys); err != nil {
		return nil, err
	}
	return s, nil
}

// KeySelector chooses the signing keys once the header block (ending with
// its blank line) is known, typically:
//
//	d, err := dkim.FromDomain(header)
//	if err != nil { return nil, err }
//	return st.ActiveDKIMKeys(ctx, d)
type KeySelector func(header []byte) ([]Key, error)

// NewSignerFor returns a Signer whose keys are chosen by sel when the end of
// the header has been written, for callers that stream the message without
// reading its header first. An error from sel, or no keys, is reported by
// Headers (ErrNoKeys): the message is then sent unsigned.
func NewSignerFor(sel KeySelector, opts SignOptions) *Signer {
	s := newSigner(opts)
	s.selectKeys = sel
	return s
}

func newSigner(opts SignOptions) *Signer {
	if opts.HeaderKeys == nil {
		opts.HeaderKeys = DefaultHeaderKeys
	}
	if opts.Oversign == nil {
		opts.Oversign = DefaultOversign
	}
	if opts.MaxHeaderBytes <= 0 {
		opts.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Signer{opts: opts}
}

// setKeys decodes keys (cached) for signing.
func (s *Signer) setKeys(keys []Key) error {
	s.keys = make([]signKey, 0, len(keys))
	for _, k := range keys {
		pk, err := cachedKey(k.PrivateKey)
		if err != nil {
			return fmt.Errorf("dkim: key %s._domainkey.%s: %w", k.Selector, k.Domain, err)
		}
		if k.Domain == "" || k.Selector == "" {
			return errors.New("dkim: key without domain or selector")
		}
		s.keys = append(s.keys, signKey{domain: strings.ToLower(k.Domain), selector: k.Selector, key: pk})
	}
	return nil
}

// Write adds message data. It always returns len(p), nil; errors are
// reported by Headers.
func (s *Signer) Write(p []byte) (int, error) {
	n := len(p)
	if s.done {
		return 0, errSignerDone
	}
	if s.err != nil {
		return n, nil
	}
	if s.started {
		if _, err := s.bw.Write(p); err != nil {
			s.fail(err)
		}
		return n, nil
	}
	// Look for the blank line ending the header, which may straddle writes.
	from := max(len(s.hdr)-3, 0)
	s.hdr = append(s.hdr, p...)
	end := headerEnd(s.hdr, from)
	if end < 0 {
		if len(s.hdr) > s.opts.MaxHeaderBytes {
			s.fail(fmt.Errorf("dkim: header longer than %d bytes", s.opts.MaxHeaderBytes))
		}
		return n, nil
	}
	if end > s.opts.MaxHeaderBytes {
		s.fail(fmt.Errorf("dkim: header longer than %d bytes", s.opts.MaxHeaderBytes))
		return n, nil
	}
	rest := s.hdr[end:]
	s.hdr = s.hdr[:end]
	s.start()
	if s.err == nil && len(rest) > 0 {
		if _, err := s.bw.Write(rest); err != nil {
			s.fail(err)
		}
	}
	return n, nil
}

// headerEnd returns the offset just past the blank line ending the header
// block in b (searching from offset from), or -1.
func headerEnd(b []byte, from int) int {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return 2 // no header fields at all
	}
	if i := bytes.Index(b[from:], []byte("\r\n\r\n")); i >= 0 {
		return from + i + 4
	}
	return -1
}

// start creates one go-msgauth signer per key, now that the header's field
// names are known, and feeds them the header.
func (s *Signer) start() {
	s.started = true
	if s.selectKeys != nil {
		keys, err := s.selectKeys(s.hdr)
		if err == nil && len(keys) == 0 {
			err = ErrNoKeys
		}
		if err == nil {
			err = s.setKeys(keys)
		}
		if err != nil {
			s.fail(err)
			return
		}
	}
	headerKeys := signedFields(s.hdr, s.opts.HeaderKeys, s.opts.Oversign)
	var expire time.Time
	if s.opts.Expiration > 0 {
		expire = s.opts.Now().Add(s.opts.Expiration)
	}
	ws := make([]io.Writer, 0, len(s.keys))
	for _, k := range s.keys {
		sg, err := msgauth.NewSigner(&msgauth.SignOptions{
			Domain:                 k.domain,
			Selector:               k.selector,
			Signer:                 k.key.signer,
			HeaderCanonicalization: msgauth.CanonicalizationRelaxed,
			BodyCanonicalization:   msgauth.CanonicalizationRelaxed,
			HeaderKeys:             headerKeys,
			Expiration:             expire,
		})
		if err != nil {
			s.fail(fmt.Errorf("dkim: %s._domainkey.%s: %w", k.selector, k.domain, err))
			return
		}
		s.sigs = append(s.sigs, sg)
		ws = append(ws, sg)
	}
	// Each signer reads through a pipe: batch small writes so that every
	// hand-over to the signing goroutines carries a useful amount.
	s.bw = bufPool.Get().(*bufio.Writer)
	s.bw.Reset(io.MultiWriter(ws...))
	if _, err := s.bw.Write(s.hdr); err != nil {
		s.fail(err)
	}
}

func (s *Signer) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

// Headers finishes the signatures and returns the DKIM-Signature header
// fields, one per key, each folded and CRLF-terminated, to prepend to the
// message. On error the message must be sent unsigned.
func (s *Signer) Headers() ([]byte, error) {
	if s.done {
		return nil, errSignerDone
	}
	if s.err == nil && !s.started {
		// The message ended without a blank line: it is all header.
		if len(s.hdr) > s.opts.MaxHeaderBytes {
			s.fail(fmt.Errorf("dkim: header longer than %d bytes", s.opts.MaxHeaderBytes))
		} else {
			if !bytes.HasSuffix(s.hdr, []byte("\r\n")) {
				s.hdr = append(s.hdr, '\r', '\n')
			}
			s.hdr = append(s.hdr, '\r', '\n')
			s.start()
		}
	}
	if s.err == nil {
		if err := s.bw.Flush(); err != nil {
			s.fail(err)
		}
	}
	if s.err != nil {
		s.Close()
		return nil, s.err
	}
	s.done = true
	s.releaseBuf()
	var out []byte
	var errs []error
	for i, sg := range s.sigs {
		if err := sg.Close(); err != nil {
			errs = append(errs, fmt.Errorf("dkim: sign with %s._domainkey.%s: %w", s.keys[i].selector, s.keys[i].domain, err))
			continue
		}
		out = append(out, sg.Signature()...)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

// Close abandons the signatures and releases the signer's goroutines. It is
// a no-op after Headers.
func (s *Signer) Close() error {
	if s.done {
		return nil
	}
	s.done = true
	s.releaseBuf()
	for _, sg := range s.sigs {
		sg.Close() //nolint:errcheck // abandoning
	}
	return nil
}

// maxSignedFields caps the h= list, keeping the signature field's lines
// under the 998-byte limit whatever the message holds.
const maxSignedFields = 64

// signedFields returns the h= list for a header block: every instance of a
// field matching keys (bottom-up, the order verifiers pick instances in),
// then every oversign field once more. From is always included.
func signedFields(hdr []byte, keys, oversign []string) []string {
	var names []string
	for line := range bytes.SplitSeq(hdr, []byte("\r\n")) {
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		names = append(names, string(bytes.TrimSpace(name)))
	}
	var h []string
	hasFrom := false
	for i := len(names) - 1; i >= 0 && len(h) < maxSignedFields; i-- {
		if matchKey(names[i], keys) || strings.EqualFold(names[i], "From") && matchKey(names[i], nil) {
			h = append(h, names[i])
			hasFrom = hasFrom || strings.EqualFold(names[i], "From")
		}
	}
	for _, k := range oversign {
		h = append(h, k)
		hasFrom = hasFrom || strings.EqualFold(k, "From")
	}
	if !hasFrom {
		h = append(h, "From")
	}
	return h
}

func matchKey(name string, keys []string) bool {
	// Only plain field names can appear in the h= tag list.
	for i := 0; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	for _, k := range keys {
		if p, ok := strings.CutSuffix(k, "*"); ok {
			if len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
				return true
			}
		} else if strings.EqualFold(name, k) {
			return true
		}
	}
	return false
}
