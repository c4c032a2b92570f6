package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
)

// recordWith rebuilds a tag=value record in its original tag order with
// some tags set (appended when new).
func recordWith(tags map[string]string, order []string, set map[string]string, newOrder ...string) string {
	var parts []string
	for _, k := range order {
		v := tags[k]
		if nv, ok := set[k]; ok {
			v = nv
		}
		parts = append(parts, k+"="+v)
	}
	for _, k := range newOrder {
		if _, ok := tags[k]; !ok {
			parts = append(parts, k+"="+set[k])
		}
	}
	return strings.Join(parts, "; ")
}

func (c *checker) checkDMARC(ctx context.Context) {
	d := c.opts.Domain
	name := "_dmarc." + d
	rua := "mailto:" + DMARCReportsLocal + "@" + d
	fix := txtRecord(name, DMARCRecord(d))
	txts, err := c.txtWithPrefix(ctx, name, "v=DMARC1")
	if err != nil && !errors.Is(err, resolve.ErrNotFound) {
		c.add(CheckDMARC, LevelError, "", "DMARC record %s: %s", name, describe(err))
		return
	}
	switch len(txts) {
	case 0:
		// A subdomain may be covered by its organisational domain's record
		// (RFC 7489 §6.6.3); look at the parents without a suffix list.
		labels := strings.Split(d, ".")
		for i := 1; i+2 <= len(labels); i++ {
			parent := strings.Join(labels[i:], ".")
			if p, _ := c.txtWithPrefix(ctx, "_dmarc."+parent, "v=DMARC1"); len(p) == 1 {
				c.add(CheckDMARC, LevelWarn, fix, "no DMARC record at %s; the record of _dmarc.%s applies (%q)", name, parent, p[0])
				return
			}
		}
		c.add(CheckDMARC, LevelError, fix, "%s has no DMARC record: receivers apply no policy to forgeries of it and send no reports", d)
		return
	case 1:
	default:
		c.add(CheckDMARC, LevelError, fix, "%s has %d DMARC records: receivers ignore them all (RFC 7489 §6.6.3)", name, len(txts))
		return
	}
	raw := txts[0]
	tags, order, err := parseTags(raw)
	if err == nil && (order[0] != "v" || tags["v"] != "DMARC1") {
		err = errors.New("v=DMARC1 must come first")
	}
	if err != nil {
		c.add(CheckDMARC, LevelError, fix, "DMARC record %q does not parse: %v", raw, err)
		return
	}
	fine := true
	bad := func(format string, args ...any) {
		fine = false
		c.add(CheckDMARC, LevelError, fix, format, args...)
	}
	policies := map[string]bool{"none": true, "quarantine": true, "reject": true}
	p, hasP := tags["p"]
	switch {
	case !hasP:
		bad("DMARC record %q has no p= policy", raw)
	case !policies[strings.ToLower(p)]:
		bad("DMARC record %q: p=%s is not none, quarantine or reject", raw, p)
	case strings.EqualFold(p, "none"):
		fine = false
		c.add(CheckDMARC, LevelWarn, txtRecord(name, recordWith(tags, order, map[string]string{"p": "quarantine"})),
			"DMARC policy of %s is p=none: forgeries are reported but still delivered", d)
	}
	if sp, ok := tags["sp"]; ok && !policies[strings.ToLower(sp)] {
		bad("DMARC record %q: sp=%s is not none, quarantine or reject", raw, sp)
	}
	for _, t := range []string{"adkim", "aspf"} {
		if v, ok := tags[t]; ok && v != "r" && v != "s" {
			bad("DMARC record %q: %s=%s is not r or s", raw, t, v)
		}
	}
	if v, ok := tags["pct"]; ok {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 0 || n > 100:
			bad("DMARC record %q: pct=%s is not 0-100", raw, v)
		case n < 100:
			fine = false
			c.add(CheckDMARC, LevelWarn, txtRecord(name, recordWith(tags, order, map[string]string{"pct": "100"})),
				"DMARC pct=%d: the policy applies to only %d%% of failing mail", n, n)
		}
	}
	if v, ok := tags["rua"]; !ok || v == "" {
		fine = false
		c.add(CheckDMARC, LevelWarn, txtRecord(name, recordWith(tags, order, map[string]string{"rua": rua}, "rua")),
			"DMARC record has no rua=: you get no aggregate reports of who sends as %s", d)
	} else {
		for u := range strings.SplitSeq(v, ",") {
			if u = strings.TrimSpace(u); !strings.HasPrefix(strings.ToLower(u), "mailto:") && !strings.HasPrefix(strings.ToLower(u), "https:") {
				bad("DMARC rua %q is not a mailto: URI", u)
			}
		}
	}
	if fine {
		c.add(CheckDMARC, LevelOK, "", "DMARC record %q", raw)
	}
}

// stsPolicy is a parsed MTA-STS policy file (RFC 8461 §3.2).
type stsPolicy struct {
	version string
	mode    string
	maxAge  int
	mx      []string
}

func parseSTSPolicy(body string) (stsPolicy, error) {
	var p stsPolicy
	seen := map[string]bool{}
	for line := range strings.SplitSeq(body, "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return p, fmt.Errorf("line %q is not key: value", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k != "mx" && seen[k] {
			return p, fmt.Errorf("%s appears twice", k)
		}
		seen[k] = true
		switch k {
		case "version":
			p.version = v
		case "mode":
			p.mode = v
		case "max_age":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 31557600 {
				return p, fmt.Errorf("max_age %q is not 0-31557600", v)
			}
			p.maxAge = n
		case "mx":
			p.mx = append(p.mx, strings.ToLower(strings.TrimSuffix(v, ".")))
		}
	}
	switch {
	case p.version != "STSv1":
		return p, errors.New("version is not STSv1")
	case p.mode != "enforce" && p.mode != "testing" && p.mode != "none":
		return p, fmt.Errorf("mode %q is not enforce, testing or none", p.mode)
	case !seen["max_age"]:
		return p, errors.New("no max_age")
	case p.mode != "none" && len(p.mx) == 0:
		return p, errors.New("no mx")
	}
	return p, nil
}

// stsMatch reports whether MX host matches a policy pattern ("*.example.com"
// matches exactly one more label).
func stsMatch(pattern, host string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		i := strings.IndexByte(host, '.')
		return i > 0 && host[i+1:] == rest
	}
	return pattern == host
}

func (c *checker) stsPolicyText() string {
	mx := c.mxHosts
	if len(mx) == 0 {
		mx = []string{c.opts.Hostname}
	}
	var b strings.Builder
	b.WriteString("version: STSv1\nmode: testing\n")
	for _, h := range mx {
		b.WriteString("mx: " + h + "\n")
	}
	b.WriteString("max_age: 604800")
	return b.String()
}

func (c *checker) checkMTASTS(ctx context.Context) {
	d := c.opts.Domain
	name := "_mta-sts." + d
	url := "https://mta-sts." + d + "/.well-known/mta-sts.txt"
	policyFix := "Herald serves the policy at " + url + " itself: with [acme] enabled = true (it gets the certificate of mta-sts." + d +
		" and answers on port 443), or through a reverse proxy with that certificate passing mta-sts." + d + " to http.listen; publish\n" +
		fqdn("mta-sts."+d) + " CNAME " + fqdn(c.opts.Hostname) + "\nThe policy it serves (mode from herald domain policy " + d + " --mta-sts):\n" + c.stsPolicyText()
	id := MTASTSID(time.Now())
	txts, err := c.txtWithPrefix(ctx, name, "v=STSv1")
	if err != nil && !errors.Is(err, resolve.ErrNotFound) {
		c.add(CheckMTASTS, LevelError, "", "MTA-STS record %s: %s", name, describe(err))
		return
	}
	switch len(txts) {
	case 0:
		c.add(CheckMTASTS, LevelWarn, txtRecord(name, "v=STSv1; id="+id)+"\nand "+policyFix,
			"%s publishes no MTA-STS policy (optional): senders may deliver to it without TLS", d)
		return
	case 1:
	default:
		c.add(CheckMTASTS, LevelError, txtRecord(name, "v=STSv1; id="+id), "%s has %d MTA-STS records: senders ignore them all", name, len(txts))
		return
	}
	tags, order, err := parseTags(txts[0])
	if err == nil && (order[0] != "v" || tags["v"] != "STSv1") {
		err = errors.New("v=STSv1 must come first")
	}
	if err == nil {
		if v := tags["id"]; v == "" || len(v) > 32 || strings.IndexFunc(v, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}) >= 0 {
			err = fmt.Errorf("id=%q is not 1-32 letters and digits", v)
		}
	}
	if err != nil {
		c.add(CheckMTASTS, LevelError, txtRecord(name, "v=STSv1; id="+id), "MTA-STS record %q does not parse: %v", txts[0], err)
		return
	}
	if c.opts.HTTPGet == nil {
		c.add(CheckMTASTS, LevelWarn, "", "MTA-STS policy %s was not fetched", url)
		return
	}
	body, err := c.opts.HTTPGet(ctx, url)
	if err != nil {
		c.add(CheckMTASTS, LevelError, policyFix, "MTA-STS policy %s cannot be fetched: %v", url, err)
		return
	}
	pol, err := parseSTSPolicy(string(body))
	if err != nil {
		c.add(CheckMTASTS, LevelError, policyFix, "MTA-STS policy %s does not parse: %v", url, err)
		return
	}
	fine := true
	for _, h := range c.mxHosts {
		covered := false
		for _, p := range pol.mx {
			covered = covered || stsMatch(p, h)
		}
		if covered || pol.mode == "none" {
			continue
		}
		fine = false
		level := LevelWarn
		if pol.mode == "enforce" {
			level = LevelError
		}
		c.add(CheckMTASTS, level, policyFix, "MTA-STS policy (mode %s) does not list MX host %s: senders enforcing it refuse to deliver there", pol.mode, h)
	}
	switch {
	case pol.mode == "none":
		fine = false
		c.add(CheckMTASTS, LevelWarn, policyFix, "MTA-STS policy mode is none: the policy is withdrawn")
	case pol.maxAge < 86400:
		fine = false
		c.add(CheckMTASTS, LevelWarn, policyFix, "MTA-STS max_age %d is under a day; weeks are recommended", pol.maxAge)
	}
	if fine {
		c.add(CheckMTASTS, LevelOK, "", "MTA-STS policy (mode %s, id %s) covers the MX hosts", pol.mode, tags["id"])
	}
}

func (c *checker) checkTLSRPT(ctx context.Context) {
	d := c.opts.Domain
	name := "_smtp._tls." + d
	fix := txtRecord(name, TLSRPTRecord(d))
	txts, err := c.txtWithPrefix(ctx, name, "v=TLSRPTv1")
	if err != nil && !errors.Is(err, resolve.ErrNotFound) {
		c.add(CheckTLSRPT, LevelError, "", "TLS-RPT record %s: %s", name, describe(err))
		return
	}
	switch len(txts) {
	case 0:
		c.add(CheckTLSRPT, LevelWarn, fix, "%s publishes no TLS-RPT record (optional): you get no reports of TLS failures", d)
		return
	case 1:
	default:
		c.add(CheckTLSRPT, LevelError, fix, "%s has %d TLS-RPT records: senders ignore them all", name, len(txts))
		return
	}
	tags, _, err := parseTags(txts[0])
	if err == nil && tags["rua"] == "" {
		err = errors.New("no rua=")
	}
	if err == nil {
		for u := range strings.SplitSeq(tags["rua"], ",") {
			if u = strings.ToLower(strings.TrimSpace(u)); !strings.HasPrefix(u, "mailto:") && !strings.HasPrefix(u, "https:") {
				err = fmt.Errorf("rua %q is not a mailto: or https: URI", u)
			}
		}
	}
	if err != nil {
		c.add(CheckTLSRPT, LevelError, fix, "TLS-RPT record %q does not parse: %v", txts[0], err)
		return
	}
	c.add(CheckTLSRPT, LevelOK, "", "TLS-RPT record %q", txts[0])
}
