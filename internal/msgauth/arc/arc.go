// Package arc verifies Authenticated Received Chains (RFC 8617): the
// ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results sets that
// intermediaries such as mailing lists add, so a receiver can trust the
// authentication results recorded before the message was modified.
//
// Verify implements the validator of RFC 8617 §5.2. It reads the message
// once: the header section is buffered (at most MaxHeaderBytes), the body is
// canonicalized and hashed as it streams past.
package arc

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Status is an ARC chain validation status (RFC 8617 §4.4).
type Status string

// Chain validation statuses. RFC 8617 defines no temporary error status: a
// chain that cannot be checked because a key lookup failed temporarily is
// StatusFail with Result.Temporary set, so callers can defer instead.
const (
	StatusNone Status = "none" // the message carries no ARC header field
	StatusPass Status = "pass" // every ARC-Seal and the latest AMS verify
	StatusFail Status = "fail" // anything else
)

// MaxInstances is the highest ARC instance allowed (RFC 8617 §4.2.1).
const MaxInstances = 50

// MaxHeaderBytes bounds the header section Verify buffers.
const MaxHeaderBytes = 1 << 20

// maxBodyHashes bounds how many distinct body canonicalizations (c= body
// part and l=) are hashed in the single pass over the body. The latest AMS
// always gets one; older AMSs beyond the bound count as not validated when
// computing OldestPass.
const maxBodyHashes = 4

// ErrHeaderTooLarge is returned when the header section exceeds
// MaxHeaderBytes.
var ErrHeaderTooLarge = errors.New("arc: header section too large")

// LookupTXT returns the TXT records of name, one string per record (the
// record's strings concatenated). Errors should wrap resolve.ErrNotFound or
// resolve.ErrTemporary; resolve.Resolver's LookupTXT fits.
type LookupTXT = func(ctx context.Context, name string) ([]string, error)

// Result is the outcome of ARC validation.
type Result struct {
	// ChainValidation is none, pass or fail.
	ChainValidation Status
	// Instances is the number of ARC sets found (the highest i=), 0 when none
	// or when the header fields could not be parsed.
	Instances int
	// OldestPass is the lowest instance k such that the AMSs of instances k
	// to Instances all validate ("arc.oldest-pass", RFC 8617 §5.2 step 5, as
	// Exim reports it); Instances when only the latest one does. It is 0
	// unless ChainValidation is pass.
	OldestPass int
	// Domain and Selector are d= and s= of the latest ARC-Seal, when the
	// chain's structure is valid.
	Domain, Selector string
	// AAR holds the ARC-Authentication-Results payloads, AAR[0] for i=1: the
	// text after "i=N;", unfolded, starting with the authserv-id. Filled
	// whenever the structure is valid, so callers read it only on pass.
	AAR []string
	// Reason explains a fail (or none) in a few words.
	Reason string
	// Temporary is set when the chain failed because a key lookup failed
	// temporarily; retrying later may give another answer.
	Temporary bool
}

// arcSet is one instance's three header fields.
type arcSet struct {
	aar, ams, as    *field
	naar, nams, nas int
	payload         string
	amsTags, asTags map[string]string
	amsSig          *amsParams
	amsErr          error
}

// amsParams are the parsed tags of an ARC-Message-Signature.
type amsParams struct {
	alg           string
	headerRelaxed bool
	body          bodyKey
	bh, b         []byte
	d, s          string
	h             []string
}

// bodyKey identifies one body canonicalization: relaxed or simple, and a
// length limit (-1: none).
type bodyKey struct {
	relaxed bool
	limit   int64
}

type bodyResult struct {
	sum []byte
	n   int64
}

// Verify reads a message from r and validates its ARC chain, looking keys up
// with lookupTXT. The returned error is non-nil only when the message could
// not be read (I/O error, ErrHeaderTooLarge) or ctx ended; a broken or
// forged chain is a Result with ChainValidation fail. r is not necessarily
// read to its end (a message without a usable chain stops at the header).
// Line endings may be CRLF or bare LF.
func Verify(ctx context.Context, r io.Reader, lookupTXT LookupTXT) (Result, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	fields, err := readHeader(br, MaxHeaderBytes)
	if err != nil {
		return Result{}, err
	}
	sets, res := collect(fields)
	if sets == nil {
		return res, nil
	}
	n := len(sets) - 1 // sets[0] unused, instances 1..n

	// Body hashes for the latest AMS and, within the bound, older ones.
	keys := map[bodyKey]*bodyCanon{}
	var order []bodyKey
	for i := n; i >= 1; i-- {
		s := sets[i]
		s.amsSig, s.amsErr = parseAMS(s.amsTags, i)
		if s.amsErr != nil {
			continue
		}
		if _, ok := keys[s.amsSig.body]; !ok && len(keys) < maxBodyHashes {
			keys[s.amsSig.body] = newBodyCanon(s.amsSig.body.relaxed, sha256.New(), s.amsSig.body.limit)
			order = append(order, s.amsSig.body)
		}
	}
	if sets[n].amsErr != nil {
		return fail(res, fmt.Sprintf("ARC-Message-Signature i=%d: %v", n, sets[n].amsErr)), nil
	}
	writers := make([]io.Writer, 0, len(order))
	for _, k := range order {
		writers = append(writers, keys[k])
	}
	if _, err := io.Copy(io.MultiWriter(writers...), ctxReader{ctx, br}); err != nil {
		return Result{}, fmt.Errorf("arc: read body: %w", err)
	}
	bodies := make(map[bodyKey]bodyResult, len(keys))
	for k, c := range keys {
		sum, total := c.Sum()
		bodies[k] = bodyResult{sum, total}
	}

	kc := &keyCache{lookup: lookupTXT, seen: map[string]keyEntry{}}
	// Step 4: the latest AMS.
	if err := verifyAMS(ctx, kc, fields, sets[n], bodies); err != nil {
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("arc: %w", ctx.Err())
		}
		res.Temporary = errors.Is(err, errTempKey)
		return fail(res, fmt.Sprintf("ARC-Message-Signature i=%d: %v", n, err)), nil
	}
	// Step 6: every AS, newest first.
	for i := n; i >= 1; i-- {
		if err := verifyAS(ctx, kc, sets, i); err != nil {
			if ctx.Err() != nil {
				return Result{}, fmt.Errorf("arc: %w", ctx.Err())
			}
			res.Temporary = errors.Is(err, errTempKey)
			return fail(res, fmt.Sprintf("ARC-Seal i=%d: %v", i, err)), nil
		}
	}
	// Step 5 (optional): oldest-pass, only meaningful for a passing chain.
	res.OldestPass = n
	for i := n - 1; i >= 1; i-- {
		if verifyAMS(ctx, kc, fields, sets[i], bodies) != nil {
			break
		}
		res.OldestPass = i
	}
	if ctx.Err() != nil {
		return Result{}, fmt.Errorf("arc: %w", ctx.Err())
	}
	res.ChainValidation = StatusPass
	return res, nil
}

func fail(res Result, reason string) Result {
	res.ChainValidation = StatusFail
	res.OldestPass = 0
	res.Reason = reason
	return res
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

const (
	hdrAAR = "arc-authentication-results"
	hdrAMS = "arc-message-signature"
	hdrAS  = "arc-seal"
)

// collect groups the ARC header fields into sets and runs steps 1 to 3 of
// RFC 8617 §5.2. On success it returns sets indexed by instance (index 0
// unused) and a Result prefilled with Instances, Domain, Selector and AAR.
// Otherwise sets is nil and the Result is final (none or fail).
func collect(fields []field) ([]*arcSet, Result) {
	byInst := map[int]*arcSet{}
	maxInst, found := 0, false
	for i := range fields {
		f := &fields[i]
		if f.lname != hdrAAR && f.lname != hdrAMS && f.lname != hdrAS {
			continue
		}
		found = true
		var inst int
		var payload string
		var tags map[string]string
		var err error
		if f.lname == hdrAAR {
			inst, payload, err = splitAAR(string(f.value()))
		} else if tags, err = parseTags(string(f.value())); err == nil {
			inst, err = parseInstance(tags["i"])
		}
		if err != nil {
			return nil, Result{ChainValidation: StatusFail, Reason: fmt.Sprintf("malformed %s: %v", f.name, err)}
		}
		if inst > MaxInstances {
			return nil, Result{ChainValidation: StatusFail, Reason: fmt.Sprintf("instance %d exceeds %d", inst, MaxInstances)}
		}
		s := byInst[inst]
		if s == nil {
			s = &arcSet{}
			byInst[inst] = s
		}
		switch f.lname {
		case hdrAAR:
			s.aar, s.payload = f, payload
			s.naar++
		case hdrAMS:
			s.ams, s.amsTags = f, tags
			s.nams++
		case hdrAS:
			s.as, s.asTags = f, tags
			s.nas++
		}
		maxInst = max(maxInst, inst)
	}
	if !found {
		return nil, Result{ChainValidation: StatusNone, Reason: "no ARC header fields"}
	}
	// Step 2: the latest seal already reports failure.
	if s := byInst[maxInst]; s != nil && s.nas == 1 && strings.EqualFold(s.asTags["cv"], "fail") {
		return nil, Result{ChainValidation: StatusFail, Instances: maxInst, Reason: fmt.Sprintf("ARC-Seal i=%d has cv=fail", maxInst)}
	}
	// Step 3: structure.
	res := Result{Instances: maxInst, AAR: make([]string, maxInst)}
	sets := make([]*arcSet, maxInst+1)
	for i := 1; i <= maxInst; i++ {
		s := byInst[i]
		if s == nil {
			return nil, structFail(maxInst, fmt.Sprintf("instance %d missing", i))
		}
		if s.naar != 1 || s.nams != 1 || s.nas != 1 {
			return nil, structFail(maxInst, fmt.Sprintf("instance %d has %d AAR, %d AMS, %d AS (want one each)", i, s.naar, s.nams, s.nas))
		}
		cv := strings.ToLower(s.asTags["cv"])
		want := "pass"
		if i == 1 {
			want = "none"
		}
		if cv != want {
			return nil, structFail(maxInst, fmt.Sprintf("ARC-Seal i=%d has cv=%.10q, want %s", i, cv, want))
		}
		sets[i] = s
		res.AAR[i-1] = s.payload
	}
	res.Domain = sets[maxInst].asTags["d"]
	res.Selector = sets[maxInst].asTags["s"]
	return sets, res
}

func structFail(n int, reason string) Result {
	return Result{ChainValidation: StatusFail, Instances: n, Reason: reason}
}

// parseAMS checks and parses the tags of the AMS of instance i.
func parseAMS(tags map[string]string, i int) (*amsParams, error) {
	for _, t := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags[t]; !ok {
			return nil, fmt.Errorf("missing %s=", t)
		}
	}
	p := &amsParams{alg: strings.ToLower(tags["a"]), d: tags["d"], s: tags["s"], body: bodyKey{limit: -1}}
	if p.alg != "rsa-sha256" && p.alg != "ed25519-sha256" {
		return nil, fmt.Errorf("unsupported algorithm %.20q", p.alg)
	}
	// RFC 6376 §3.5: c= defaults to simple/simple; a missing body part is
	// simple.
	c := strings.ToLower(tags["c"])
	if c == "" {
		c = "simple/simple"
	}
	hc, bc, _ := strings.Cut(c, "/")
	if bc == "" {
		bc = "simple"
	}
	for _, v := range []string{hc, bc} {
		if v != "simple" && v != "relaxed" {
			return nil, fmt.Errorf("unknown canonicalization %.20q", c)
		}
	}
	p.headerRelaxed, p.body.relaxed = hc == "relaxed", bc == "relaxed"
	if l, ok := tags["l"]; ok {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("invalid l=%.20q", l)
		}
		p.body.limit = n
	}
	var err error
	if p.bh, err = decodeB64(tags["bh"]); err != nil {
		return nil, fmt.Errorf("bh=: %w", err)
	}
	if p.b, err = decodeB64(tags["b"]); err != nil {
		return nil, fmt.Errorf("b=: %w", err)
	}
	for _, h := range strings.Split(tags["h"], ":") {
		h = strings.ToLower(strings.Trim(h, " \t\r\n"))
		if h == "" {
			continue
		}
		if h == hdrAS {
			return nil, errors.New("h= includes ARC-Seal")
		}
		p.h = append(p.h, h)
	}
	if len(p.h) == 0 {
		return nil, errors.New("empty h=")
	}
	if p.d == "" || p.s == "" {
		return nil, errors.New("empty d= or s=")
	}
	return p, nil
}

// verifyAMS verifies the ARC-Message-Signature of set s like a DKIM
// signature: body hash, then the fields of h= selected bottom-up.
func verifyAMS(ctx context.Context, kc *keyCache, fields []field, s *arcSet, bodies map[bodyKey]bodyResult) error {
	p := s.amsSig
	if s.amsErr != nil {
		return s.amsErr
	}
	body, ok := bodies[p.body]
	if !ok {
		return errors.New("body not hashed (too many canonicalizations)")
	}
	if p.body.limit >= 0 && p.body.limit > body.n {
		return fmt.Errorf("l=%d exceeds the body length %d", p.body.limit, body.n)
	}
	if !bytes.Equal(body.sum, p.bh) {
		return errors.New("body hash mismatch")
	}
	var buf []byte
	next := map[string]int{}
	for _, name := range p.h {
		j, ok := next[name]
		if !ok {
			j = len(fields)
		}
		for j--; j >= 0; j-- {
			if fields[j].lname == name {
				buf = canonHeader(buf, &fields[j], p.headerRelaxed)
				break
			}
		}
		next[name] = max(j, 0)
	}
	buf = canonSigHeader(buf, s.ams, p.headerRelaxed)
	return checkSig(ctx, kc, p.alg, p.d, p.s, buf, p.b)
}

// verifyAS verifies the ARC-Seal of instance i over the ARC sets 1..i in
// the order of RFC 8617 §5.1.1, with relaxed header canonicalization.
func verifyAS(ctx context.Context, kc *keyCache, sets []*arcSet, i int) error {
	tags := sets[i].asTags
	for _, t := range []string{"a", "b", "cv", "d", "s"} {
		if tags[t] == "" {
			return fmt.Errorf("missing %s=", t)
		}
	}
	if _, ok := tags["h"]; ok {
		return errors.New("h= not allowed in ARC-Seal")
	}
	alg := strings.ToLower(tags["a"])
	if alg != "rsa-sha256" && alg != "ed25519-sha256" {
		return fmt.Errorf("unsupported algorithm %.20q", alg)
	}
	sig, err := decodeB64(tags["b"])
	if err != nil {
		return fmt.Errorf("b=: %w", err)
	}
	var buf []byte
	for j := 1; j <= i; j++ {
		buf = canonHeader(buf, sets[j].aar, true)
		buf = canonHeader(buf, sets[j].ams, true)
		if j < i {
			buf = canonHeader(buf, sets[j].as, true)
		}
	}
	buf = canonSigHeader(buf, sets[i].as, true)
	return checkSig(ctx, kc, alg, tags["d"], tags["s"], buf, sig)
}

// checkSig hashes data with SHA-256 and verifies sig with the key of s in d.
func checkSig(ctx context.Context, kc *keyCache, alg, d, s string, data, sig []byte) error {
	key, err := kc.get(ctx, d, s)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(data)
	switch k := key.key.(type) {
	case *rsa.PublicKey:
		if alg != "rsa-sha256" {
			return fmt.Errorf("a=%s with an RSA key", alg)
		}
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig); err != nil {
			return errors.New("bad signature")
		}
	case ed25519.PublicKey:
		if alg != "ed25519-sha256" {
			return fmt.Errorf("a=%s with an Ed25519 key", alg)
		}
		if !ed25519.Verify(k, digest[:], sig) {
			return errors.New("bad signature")
		}
	default:
		return errors.New("no usable key")
	}
	return nil
}

// readHeader reads the header section up to and including the empty line
// (or EOF), at most limit bytes, and splits it into fields. Lines that are
// neither a field nor a continuation are skipped.
func readHeader(br *bufio.Reader, limit int) ([]field, error) {
	var fields []field
	var cur []byte // raw bytes of the field being read
	total := 0
	flush := func() {
		if cur == nil {
			return
		}
		if colon := bytes.IndexByte(cur, ':'); colon > 0 {
			name := string(cur[:colon])
			lname := strings.ToLower(strings.TrimRight(name, " \t"))
			fields = append(fields, field{name: name, lname: lname, raw: cur})
		}
		cur = nil
	}
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		total += len(chunk)
		if total > limit {
			return nil, ErrHeaderTooLarge
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("arc: read header: %w", err)
		}
		eof := err != nil
		if len(line) == 0 && eof {
			break
		}
		// Normalise the line ending to CRLF.
		content := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(content) == 0 {
			break // end of header section
		}
		if isWSP(content[0]) {
			if cur != nil {
				cur = append(append(cur, content...), '\r', '\n')
			}
		} else {
			flush()
			cur = append(append(make([]byte, 0, len(content)+2), content...), '\r', '\n')
		}
		line = line[:0]
		if eof {
			break
		}
	}
	flush()
	return fields, nil
}
