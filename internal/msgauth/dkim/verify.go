package dkim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/heraldmail/herald/internal/resolve"
)

// Result words of RFC 8601 for the dkim method.
const (
	ResultNone      = "none"      // the message has no signature
	ResultPass      = "pass"      // the signature verified
	ResultFail      = "fail"      // the signature or body hash did not verify
	ResultNeutral   = "neutral"   // not used by Verify; for callers' policy
	ResultTempError = "temperror" // a DNS failure that may go away
	ResultPermError = "permerror" // a malformed signature, missing or bad key
)

// MaxSignatures is the largest number of signatures Verify checks; further
// ones are ignored (a defence against work amplification).
const MaxSignatures = 5

// Result is the verdict on one DKIM-Signature.
type Result struct {
	Domain     string // d=
	Selector   string // s=
	Algorithm  string // a=, e.g. "rsa-sha256"
	Identifier string // i= (or "@" + d= when absent), "" if unparsable
	Result     string // an RFC 8601 word: ResultPass, ResultFail, ...
	Reason     string // why, for anything but pass
	// HeaderB is the start of b= for Authentication-Results' header.b
	// (RFC 6008): at least 8 characters, longer when needed to tell this
	// signature from another of the message.
	HeaderB string
}

// LookupTXT returns the TXT records of a name, one string per record with
// its strings joined. Errors wrap resolve.ErrNotFound (no such key: a
// permanent error) or resolve.ErrTemporary; anything else is treated as
// temporary. resolve.Resolver's LookupTXT fits.
type LookupTXT func(ctx context.Context, name string) ([]string, error)

// tempDNSError makes go-msgauth classify a lookup failure as temporary
// (it tests for net.Error with Temporary() true).
type tempDNSError struct{ err error }

func (e tempDNSError) Error() string   { return e.err.Error() }
func (e tempDNSError) Unwrap() error   { return e.err }
func (e tempDNSError) Timeout() bool   { return true }
func (e tempDNSError) Temporary() bool { return true }

// maxVerifyHeader bounds the header block Verify reads.
const maxVerifyHeader = 1 << 20

// Verify checks the DKIM signatures of the message read from r (CRLF line
// endings), at most MaxSignatures of them, looking keys up with lookupTXT.
// It returns one Result per signature in header order, or a single Result
// with ResultNone when the message has no signature. An error means the
// message could not be read or its header is malformed.
func Verify(ctx context.Context, r io.Reader, lookupTXT LookupTXT) ([]Result, error) {
	br := bufio.NewReaderSize(r, 16<<10)
	hdr, err := readHeaderBlock(br, maxVerifyHeader)
	if err != nil {
		return nil, err
	}
	sigs := signatureFields(hdr)
	if len(sigs) == 0 {
		return []Result{{Result: ResultNone, Reason: "no signature"}}, nil
	}
	if len(sigs) > MaxSignatures {
		sigs = sigs[:MaxSignatures]
	}
	opts := &msgauth.VerifyOptions{
		MaxVerifications: MaxSignatures,
		LookupTXT: func(name string) ([]string, error) {
			txt, err := lookupTXT(ctx, name)
			switch {
			case err == nil:
				return txt, nil
			case errors.Is(err, resolve.ErrNotFound):
				return nil, err
			default:
				return nil, tempDNSError{err}
			}
		},
	}
	verifs, err := msgauth.VerifyWithOptions(io.MultiReader(bytes.NewReader(hdr), br), opts)
	if err != nil && !errors.Is(err, msgauth.ErrTooManySignatures) {
		return nil, fmt.Errorf("dkim: verify: %w", err)
	}
	if len(verifs) != len(sigs) {
		return nil, fmt.Errorf("dkim: verify: %d verifications for %d signatures", len(verifs), len(sigs))
	}
	out := make([]Result, len(sigs))
	for i, v := range verifs {
		tags := sigs[i]
		res := Result{
			Domain:     strings.ToLower(tags["d"]),
			Selector:   tags["s"],
			Algorithm:  tags["a"],
			Identifier: v.Identifier,
		}
		switch err := v.Err; {
		case err == nil:
			res.Result = ResultPass
		case msgauth.IsTempFail(err):
			res.Result = ResultTempError
		case msgauth.IsPermFail(err):
			res.Result = ResultPermError
		default:
			res.Result = ResultFail
		}
		if v.Err != nil {
			res.Reason = strings.TrimPrefix(v.Err.Error(), "dkim: ")
		}
		out[i] = res
	}
	setHeaderB(out, sigs)
	return out, nil
}

// readHeaderBlock reads through the blank line ending the header (or to
// EOF) and returns it, at most limit bytes.
func readHeaderBlock(br *bufio.Reader, limit int) ([]byte, error) {
	var hdr []byte
	for {
		line, err := br.ReadSlice('\n')
		hdr = append(hdr, line...)
		if len(hdr) > limit {
			return nil, fmt.Errorf("dkim: header longer than %d bytes", limit)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			// A message that is all header: end the block as signers do.
			if len(hdr) > 0 && !bytes.HasSuffix(hdr, []byte("\n")) {
				hdr = append(hdr, '\r', '\n')
			}
			return append(hdr, '\r', '\n'), nil
		case err != nil:
			return nil, fmt.Errorf("dkim: read header: %w", err)
		}
		if len(line) <= 2 && strings.TrimRight(string(line), "\r\n") == "" {
			return hdr, nil
		}
	}
}

// signatureFields returns the tags of each DKIM-Signature field in header
// order, with whitespace removed from values (as go-msgauth reads them).
// An unparsable field yields an empty map, keeping the order aligned.
func signatureFields(hdr []byte) []map[string]string {
	var fields []string
	for line := range strings.SplitSeq(string(hdr), "\n") {
		line = strings.TrimSuffix(line, "\r")
		switch {
		case line == "":
		case (line[0] == ' ' || line[0] == '\t') && len(fields) > 0:
			// A continuation; a leading one starts a field, as in go-msgauth.
			fields[len(fields)-1] += line
		default:
			fields = append(fields, line)
		}
	}
	var out []map[string]string
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		if !strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
			continue
		}
		tags := map[string]string{}
		for tv := range strings.SplitSeq(value, ";") {
			t, v, ok := strings.Cut(tv, "=")
			if !ok {
				continue
			}
			t = strings.TrimSpace(t)
			if _, dup := tags[t]; !dup {
				tags[t] = strings.Join(strings.Fields(v), "")
			}
		}
		out = append(out, tags)
	}
	return out
}

// setHeaderB fills HeaderB: the first 8 characters of b=, extended until
// no other signature of the message shares the prefix.
func setHeaderB(out []Result, sigs []map[string]string) {
	for i := range out {
		b := sigs[i]["b"]
		n := min(8, len(b))
		for ; n < len(b); n++ {
			unique := true
			for j := range sigs {
				if j != i && strings.HasPrefix(sigs[j]["b"], b[:n]) {
					unique = false
					break
				}
			}
			if unique {
				break
			}
		}
		out[i].HeaderB = b[:n]
	}
}
