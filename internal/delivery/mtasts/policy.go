// Package mtasts implements the sending side of SMTP MTA Strict Transport
// Security (RFC 8461): it discovers a domain's policy through the
// _mta-sts TXT record, fetches it over HTTPS from
// https://mta-sts.<domain>/.well-known/mta-sts.txt (resolving that host
// through Herald's own resolver and verifying the certificate), parses it,
// caches it in memory for max_age and tells delivery which MX hosts are
// allowed.
package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy mode.
type Mode string

// Policy modes (RFC 8461 §5).
const (
	Enforce Mode = "enforce" // only matching MX hosts, verified TLS; else defer
	Testing Mode = "testing" // deliver as usual, report failures (TLS-RPT)
	None    Mode = "none"    // no policy
)

// MaxMaxAge is the largest max_age honoured (RFC 8461 §3.2: 31557600 s).
const MaxMaxAge = 31557600 * time.Second

// Policy is a parsed MTA-STS policy.
type Policy struct {
	Domain  string        // the policy domain
	ID      string        // the id of the TXT record it was fetched for
	Mode    Mode          // enforce, testing or none
	MX      []string      // lower-case patterns, e.g. "mx1.example.com", "*.example.net"
	MaxAge  time.Duration // how long the policy may be cached
	Fetched time.Time     // when it was fetched
	Lines   []string      // the policy text, one entry per line (TLS-RPT "policy-string")
}

// Expires returns when the cached policy stops being valid.
func (p *Policy) Expires() time.Time { return p.Fetched.Add(p.MaxAge) }

// Parse parses a policy body (RFC 8461 §3.2). Lines are "key: value"
// separated by LF or CRLF; unknown keys are ignored; version STSv1, a
// valid mode and max_age are required, and at least one mx unless the
// mode is none.
func Parse(body []byte) (*Policy, error) {
	p := &Policy{}
	var version, mode, maxAge string
	var seenMaxAge bool
	for line := range strings.SplitSeq(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
		line = strings.TrimRight(line, " \t")
		if line == "" {
			continue
		}
		p.Lines = append(p.Lines, line)
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("mta-sts: policy line %q has no colon", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			if version == "" {
				version = v
			}
		case "mode":
			if mode == "" {
				mode = v
			}
		case "max_age":
			if !seenMaxAge {
				maxAge, seenMaxAge = v, true
			}
		case "mx":
			if v == "" || strings.ContainsAny(v, " \t") {
				return nil, fmt.Errorf("mta-sts: invalid mx %q", v)
			}
			p.MX = append(p.MX, strings.TrimSuffix(strings.ToLower(v), "."))
		}
	}
	if version != "STSv1" {
		return nil, fmt.Errorf("mta-sts: version %q, want STSv1", version)
	}
	switch Mode(mode) {
	case Enforce, Testing, None:
		p.Mode = Mode(mode)
	default:
		return nil, fmt.Errorf("mta-sts: invalid mode %q", mode)
	}
	if !seenMaxAge {
		return nil, errors.New("mta-sts: max_age missing")
	}
	n, err := strconv.ParseUint(maxAge, 10, 64)
	if err != nil || len(maxAge) > 10 {
		return nil, fmt.Errorf("mta-sts: invalid max_age %q", maxAge)
	}
	p.MaxAge = min(time.Duration(n)*time.Second, MaxMaxAge)
	if len(p.MX) == 0 && p.Mode != None {
		return nil, errors.New("mta-sts: no mx in policy")
	}
	return p, nil
}

// Match reports whether the MX host name matches one of the policy's mx
// patterns (RFC 8461 §4.1): exact, case-insensitive, or a leading "*."
// wildcard standing for exactly one label.
func (p *Policy) Match(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, pat := range p.MX {
		if rest, ok := strings.CutPrefix(pat, "*."); ok {
			label, parent, found := strings.Cut(host, ".")
			if found && label != "" && parent == rest {
				return true
			}
			continue
		}
		if pat == host {
			return true
		}
	}
	return false
}

// ParseTXT parses an _mta-sts TXT record ("v=STSv1; id=20240101T000000;")
// and returns its id.
func ParseTXT(txt string) (string, error) {
	fields := strings.Split(txt, ";")
	if strings.TrimSpace(fields[0]) != "v=STSv1" {
		return "", fmt.Errorf("mta-sts: TXT record %q does not start with v=STSv1", txt)
	}
	id := ""
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(f), "=")
		if !ok {
			if strings.TrimSpace(f) == "" {
				continue
			}
			return "", fmt.Errorf("mta-sts: bad field %q in TXT record", f)
		}
		if k == "id" && id == "" {
			id = v
		}
	}
	if id == "" || len(id) > 32 || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) >= 0 {
		return "", fmt.Errorf("mta-sts: invalid id %q in TXT record", id)
	}
	return id, nil
}
