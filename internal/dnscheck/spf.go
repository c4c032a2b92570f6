package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldmail/herald/internal/resolve"
)

// SPF limits of RFC 7208 §4.6.4.
const (
	spfMaxLookups     = 10 // mechanisms and modifiers that query DNS
	spfMaxVoidLookups = 2  // lookups answering NXDOMAIN or no records
	spfMaxMXNames     = 10 // MX hosts looked up by one mx mechanism
	spfMaxDepth       = 20 // include/redirect nesting before we give up
)

// spfTerm is one mechanism of an SPF record.
type spfTerm struct {
	qual   byte   // '+', '-', '~' or '?'
	mech   string // all, include, a, mx, ptr, ip4, ip6, exists
	domain string // domain-spec; "" means the current domain
	prefix netip.Prefix
	cidr4  int // a/mx prefix lengths; -1 when absent
	cidr6  int
	raw    string
}

// spfRecord is a parsed SPF record.
type spfRecord struct {
	terms    []spfTerm
	redirect string
	exp      string
}

// queries reports whether the term costs a DNS lookup (RFC 7208 §4.6.4).
func (t spfTerm) queries() bool {
	switch t.mech {
	case "include", "a", "mx", "ptr", "exists":
		return true
	}
	return false
}

// all returns the record's "all" term, if any.
func (r *spfRecord) all() (spfTerm, bool) {
	for _, t := range r.terms {
		if t.mech == "all" {
			return t, true
		}
	}
	return spfTerm{}, false
}

// isSPF reports whether a TXT record is an SPF record ("v=spf1" alone or
// followed by a space).
func isSPF(txt string) bool {
	return len(txt) >= 6 && strings.EqualFold(txt[:6], "v=spf1") && (len(txt) == 6 || txt[6] == ' ')
}

// parseSPF parses an SPF record.
func parseSPF(s string) (*spfRecord, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 || !strings.EqualFold(fields[0], "v=spf1") {
		return nil, errors.New("does not start with v=spf1")
	}
	rec := &spfRecord{}
	for _, f := range fields[1:] {
		if name, value, ok := modifier(f); ok {
			switch strings.ToLower(name) {
			case "redirect", "exp":
				if value == "" || !validDomainSpec(value) {
					return nil, fmt.Errorf("%q: bad domain", f)
				}
				p := &rec.redirect
				if strings.EqualFold(name, "exp") {
					p = &rec.exp
				}
				if *p != "" {
					return nil, fmt.Errorf("%s= appears twice", strings.ToLower(name))
				}
				*p = strings.ToLower(value)
			}
			continue // unknown modifiers are ignored (RFC 7208 §6)
		}
		t, err := parseTerm(f)
		if err != nil {
			return nil, err
		}
		rec.terms = append(rec.terms, t)
	}
	return rec, nil
}

// modifier splits "name=value" when f is a modifier.
func modifier(f string) (string, string, bool) {
	i := strings.IndexByte(f, '=')
	if i <= 0 {
		return "", "", false
	}
	name := f[:i]
	for j, r := range name {
		alpha := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !alpha && (j == 0 || !(r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')) {
			return "", "", false
		}
	}
	return name, f[i+1:], true
}

func validDomainSpec(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\"") {
		return false
	}
	if strings.Contains(s, "%") {
		return true // macros are not validated further
	}
	return strings.Contains(strings.TrimSuffix(s, "."), ".")
}

func parseTerm(f string) (spfTerm, error) {
	t := spfTerm{qual: '+', cidr4: -1, cidr6: -1, raw: f}
	if strings.ContainsRune("+-~?", rune(f[0])) {
		t.qual = f[0]
		f = f[1:]
	}
	end := strings.IndexAny(f, ":/")
	if end < 0 {
		end = len(f)
	}
	t.mech, f = strings.ToLower(f[:end]), f[end:]
	bad := func(why string) (spfTerm, error) { return spfTerm{}, fmt.Errorf("%q: %s", t.raw, why) }
	switch t.mech {
	case "all":
		if f != "" {
			return bad("all takes no argument")
		}
	case "include", "exists":
		if !strings.HasPrefix(f, ":") || !validDomainSpec(f[1:]) {
			return bad(t.mech + " needs :domain")
		}
		t.domain = strings.ToLower(f[1:])
	case "ptr":
		if f != "" {
			if !strings.HasPrefix(f, ":") || !validDomainSpec(f[1:]) {
				return bad("bad domain")
			}
			t.domain = strings.ToLower(f[1:])
		}
	case "a", "mx":
		if strings.HasPrefix(f, ":") {
			end := strings.IndexByte(f, '/')
			if end < 0 {
				end = len(f)
			}
			t.domain, f = strings.ToLower(f[1:end]), f[end:]
			if !validDomainSpec(t.domain) {
				return bad("bad domain")
			}
		}
		if f != "" {
			v4, v6, dual := strings.Cut(strings.TrimPrefix(f, "/"), "//")
			if !strings.HasPrefix(f, "/") {
				return bad("bad prefix length")
			}
			if strings.HasPrefix(f, "//") {
				v4, v6, dual = "", strings.TrimPrefix(f, "//"), true
			}
			var err error
			if v4 != "" {
				if t.cidr4, err = cidr(v4, 32); err != nil {
					return bad(err.Error())
				}
			}
			if dual {
				if t.cidr6, err = cidr(v6, 128); err != nil {
					return bad(err.Error())
				}
			}
		}
	case "ip4", "ip6":
		if !strings.HasPrefix(f, ":") {
			return bad(t.mech + " needs an address")
		}
		addr, bits, hasBits := strings.Cut(f[1:], "/")
		ip, err := netip.ParseAddr(addr)
		if err != nil || ip.Zone() != "" || (t.mech == "ip4") != ip.Is4() {
			return bad("bad " + t.mech + " address")
		}
		n := ip.BitLen()
		if hasBits {
			if n, err = cidr(bits, ip.BitLen()); err != nil {
				return bad(err.Error())
			}
		}
		t.prefix = netip.PrefixFrom(ip, n).Masked()
	default:
		return bad("unknown mechanism")
	}
	return t, nil
}

func cidr(s string, max int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > max || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad prefix length /%s", s)
	}
	return n, nil
}

// spfEnv looks SPF records up for both the walker and the evaluator.
type spfEnv struct {
	r *cachedResolver
}

var errNoSPF = errors.New("no SPF record")

// record fetches and parses the SPF record of domain. No record wraps
// errNoSPF; several records or a syntax error is a plain error
// (permerror); DNS trouble wraps resolve.ErrTemporary.
func (e spfEnv) record(ctx context.Context, domain string) (*spfRecord, string, error) {
	txts, err := e.r.LookupTXT(ctx, domain)
	if err != nil {
		if errors.Is(err, resolve.ErrNotFound) {
			return nil, "", fmt.Errorf("%s: %w", domain, errNoSPF)
		}
		return nil, "", err
	}
	var recs []string
	for _, t := range txts {
		if isSPF(t) {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return nil, "", fmt.Errorf("%s: %w", domain, errNoSPF)
	case 1:
	default:
		return nil, "", fmt.Errorf("%s has %d SPF records (permerror)", domain, len(recs))
	}
	rec, err := parseSPF(recs[0])
	if err != nil {
		return nil, recs[0], fmt.Errorf("SPF record of %s: %w", domain, err)
	}
	return rec, recs[0], nil
}

// spfCount is the result of walking a record and everything it includes.
type spfCount struct {
	lookups  int
	voids    int
	macros   bool     // some domain-spec has macros: not followed
	problems []string // permerrors found on the way
}

// walk counts the DNS-querying terms of domain's record recursively,
// through include and redirect, as a receiver evaluating every term would.
func (e spfEnv) walk(ctx context.Context, domain string, rec *spfRecord, n *spfCount, stack []string) {
	if len(stack) > spfMaxDepth || slices.Contains(stack, domain) {
		n.problems = append(n.problems, "include/redirect loop through "+strings.Join(append(stack, domain), " -> "))
		return
	}
	stack = append(stack, domain)
	follow := func(what, target string) {
		if strings.Contains(target, "%") {
			n.macros = true
			return
		}
		sub, _, err := e.record(ctx, target)
		if err != nil {
			if errors.Is(err, errNoSPF) {
				n.voids++
				n.problems = append(n.problems, fmt.Sprintf("%s:%s has no SPF record (permerror)", what, target))
			} else {
				n.problems = append(n.problems, fmt.Sprintf("%s:%s: %v", what, target, err))
			}
			return
		}
		e.walk(ctx, target, sub, n, stack)
	}
	for _, t := range rec.terms {
		if !t.queries() {
			continue
		}
		n.lookups++
		target := t.domain
		if target == "" {
			target = domain
		}
		if t.mech != "include" && strings.Contains(target, "%") {
			n.macros = true
			continue
		}
		switch t.mech {
		case "include":
			follow("include", target)
		case "a", "exists":
			if _, err := e.r.LookupIP(ctx, target); errors.Is(err, resolve.ErrNotFound) {
				n.voids++
			}
		case "mx":
			mxs, err := e.r.LookupMX(ctx, target)
			if errors.Is(err, resolve.ErrNotFound) {
				n.voids++
			} else if len(mxs) > spfMaxMXNames {
				n.problems = append(n.problems, fmt.Sprintf("mx:%s has %d MX hosts (limit %d)", target, len(mxs), spfMaxMXNames))
			}
		}
	}
	if _, ok := rec.all(); !ok && rec.redirect != "" {
		n.lookups++
		follow("redirect", rec.redirect)
	}
}

// spfResult is an RFC 7208 result.
type spfResult string

const (
	spfPass      spfResult = "pass"
	spfFail      spfResult = "fail"
	spfSoftfail  spfResult = "softfail"
	spfNeutral   spfResult = "neutral"
	spfNone      spfResult = "none"
	spfPermerror spfResult = "permerror"
	spfTemperror spfResult = "temperror"
)

func qualResult(q byte) spfResult {
	switch q {
	case '-':
		return spfFail
	case '~':
		return spfSoftfail
	case '?':
		return spfNeutral
	}
	return spfPass
}

// spfEval evaluates check_host() for one address (RFC 7208 §4), without
// macro expansion: terms with macros never match.
type spfEval struct {
	spfEnv
	ip      netip.Addr
	lookups int
	voids   int
}

// check returns the result of check_host(ip, domain) and the term that
// decided it.
func (e *spfEval) check(ctx context.Context, domain string, depth int) (spfResult, string) {
	if depth > spfMaxDepth {
		return spfPermerror, "too deeply nested"
	}
	rec, _, err := e.record(ctx, domain)
	switch {
	case errors.Is(err, errNoSPF):
		return spfNone, "no SPF record at " + domain
	case errors.Is(err, resolve.ErrTemporary):
		return spfTemperror, err.Error()
	case err != nil:
		return spfPermerror, err.Error()
	}
	for _, t := range rec.terms {
		if t.queries() {
			e.lookups++
			if e.lookups > spfMaxLookups {
				return spfPermerror, "more than 10 DNS lookups"
			}
		}
		match, res, why := e.match(ctx, domain, t, depth)
		if res != "" {
			return res, why
		}
		if match {
			return qualResult(t.qual), t.raw + " in the record of " + domain
		}
	}
	if _, ok := rec.all(); !ok && rec.redirect != "" {
		e.lookups++
		if e.lookups > spfMaxLookups {
			return spfPermerror, "more than 10 DNS lookups"
		}
		res, why := e.check(ctx, rec.redirect, depth+1)
		if res == spfNone {
			return spfPermerror, "redirect=" + rec.redirect + ": no SPF record"
		}
		return res, why
	}
	return spfNeutral, "no term of the record of " + domain + " matches"
}

// void counts a lookup that found nothing and returns permerror past the
// limit.
func (e *spfEval) void(err error) spfResult {
	if errors.Is(err, resolve.ErrNotFound) {
		e.voids++
		if e.voids > spfMaxVoidLookups {
			return spfPermerror
		}
	} else if err != nil {
		return spfTemperror
	}
	return ""
}

func (e *spfEval) inCIDR(ips []netip.Addr, t spfTerm) bool {
	for _, a := range ips {
		bits := a.BitLen()
		if a.Is4() && t.cidr4 >= 0 {
			bits = t.cidr4
		}
		if a.Is6() && t.cidr6 >= 0 {
			bits = t.cidr6
		}
		if a.Is4() == e.ip.Is4() && netip.PrefixFrom(a, bits).Masked().Contains(e.ip) {
			return true
		}
	}
	return false
}

// match decides one term. A non-empty result ends the evaluation.
func (e *spfEval) match(ctx context.Context, domain string, t spfTerm, depth int) (bool, spfResult, string) {
	target := t.domain
	if target == "" {
		target = domain
	}
	if strings.Contains(target, "%") {
		return false, "", ""
	}
	switch t.mech {
	case "all":
		return true, "", ""
	case "ip4", "ip6":
		return t.prefix.Contains(e.ip), "", ""
	case "include":
		res, why := e.check(ctx, target, depth+1)
		switch res {
		case spfPass:
			return true, "", ""
		case spfTemperror:
			return false, res, why
		case spfNone:
			return false, spfPermerror, "include:" + target + ": no SPF record"
		case spfPermerror:
			return false, res, why
		}
		return false, "", ""
	case "a", "exists":
		ips, err := e.r.LookupIP(ctx, target)
		if res := e.void(err); res != "" {
			return false, res, t.raw + ": " + describe(err)
		}
		if t.mech == "exists" {
			return err == nil, "", ""
		}
		return e.inCIDR(ips, t), "", ""
	case "mx":
		mxs, err := e.r.LookupMX(ctx, target)
		if res := e.void(err); res != "" {
			return false, res, t.raw + ": " + describe(err)
		}
		if len(mxs) > spfMaxMXNames {
			return false, spfPermerror, t.raw + ": more than 10 MX hosts"
		}
		for _, mx := range mxs {
			if mx.Host == "" {
				continue
			}
			ips, err := e.r.LookupIP(ctx, mx.Host)
			if err == nil && e.inCIDR(ips, t) {
				return true, "", ""
			}
		}
		return false, "", ""
	case "ptr":
		names, err := e.r.LookupPTR(ctx, e.ip)
		if err != nil {
			return false, "", ""
		}
		for i, n := range names {
			if i >= spfMaxMXNames {
				break
			}
			if n != target && !strings.HasSuffix(n, "."+target) {
				continue
			}
			if ips, err := e.r.LookupIP(ctx, n); err == nil && slices.Contains(ips, e.ip) {
				return true, "", ""
			}
		}
	}
	return false, "", ""
}

// suggestSPF proposes a record authorising the sending addresses: "mx" when
// they are the MX hosts' addresses, plus ip4:/ip6: for the others.
func (c *checker) suggestSPF(ctx context.Context) string {
	terms := []string{"v=spf1"}
	terms = append(terms, c.spfTermsFor(ctx, c.opts.SendingIPs, true)...)
	return strings.Join(append(terms, "-all"), " ")
}

func (c *checker) spfTermsFor(ctx context.Context, ips []netip.Addr, withMX bool) []string {
	var mxAddrs []netip.Addr
	for _, h := range c.mxHosts {
		a, _ := c.r.LookupIP(ctx, h)
		mxAddrs = append(mxAddrs, a...)
	}
	var terms []string
	if withMX && len(mxAddrs) > 0 {
		terms = append(terms, "mx")
	}
	for _, ip := range ips {
		if withMX && slices.Contains(mxAddrs, ip) {
			continue
		}
		if ip.Is4() {
			terms = append(terms, "ip4:"+ip.String())
		} else {
			terms = append(terms, "ip6:"+ip.String())
		}
	}
	return terms
}

// withTerms inserts terms into record before its "all" or redirect.
func withTerms(record string, terms []string) string {
	fields := strings.Fields(record)
	at := len(fields)
	for i, f := range fields {
		l := strings.ToLower(strings.TrimLeft(f, "+-~?"))
		if l == "all" || strings.HasPrefix(l, "redirect=") {
			at = i
			break
		}
	}
	return strings.Join(slices.Insert(fields, at, terms...), " ")
}

func (c *checker) checkSPF(ctx context.Context) {
	d := c.opts.Domain
	env := spfEnv{r: c.r}
	suggestion := txtRecord(d, c.suggestSPF(ctx))
	txts, err := c.txtWithPrefix(ctx, d, "v=spf1")
	if err != nil && !errors.Is(err, resolve.ErrNotFound) {
		c.add(CheckSPF, LevelError, "", "SPF of %s: %s", d, describe(err))
		return
	}
	switch len(txts) {
	case 0:
		c.add(CheckSPF, LevelError, suggestion, "%s has no SPF record: receivers cannot tell its mail from forgeries", d)
		return
	case 1:
	default:
		c.add(CheckSPF, LevelError, "delete all but one, merging their terms, e.g.:\n"+suggestion,
			"%s has %d SPF records (%s): every receiver's SPF check fails with permerror", d, len(txts), strings.Join(quoteAll(txts), ", "))
		return
	}
	raw := txts[0]
	rec, err := parseSPF(raw)
	if err != nil {
		c.add(CheckSPF, LevelError, suggestion, "SPF record %q does not parse: %v (permerror)", raw, err)
		return
	}
	var n spfCount
	env.walk(ctx, d, rec, &n, nil)
	fine := true
	for _, p := range n.problems {
		fine = false
		c.add(CheckSPF, LevelError, "", "%s", p)
	}
	if n.lookups > spfMaxLookups {
		fine = false
		c.add(CheckSPF, LevelError, "replace include: mechanisms by the ip4:/ip6: ranges they stand for, or drop those you do not use",
			"SPF needs %d DNS lookups counted through include/redirect (limit %d, RFC 7208 §4.6.4): receivers get permerror", n.lookups, spfMaxLookups)
	}
	if n.voids > spfMaxVoidLookups {
		fine = false
		c.add(CheckSPF, LevelWarn, "remove mechanisms naming domains that do not exist",
			"SPF has %d lookups that find nothing (void lookup limit %d): receivers may return permerror", n.voids, spfMaxVoidLookups)
	}
	if n.macros {
		c.add(CheckSPF, LevelWarn, "", "SPF uses macros; terms with macros were not followed or evaluated")
	}
	// How the record ends, following redirects.
	final, endRec := rec, d
	for range spfMaxDepth {
		if _, ok := final.all(); ok || final.redirect == "" || strings.Contains(final.redirect, "%") {
			break
		}
		next, _, err := env.record(ctx, final.redirect)
		if err != nil {
			break
		}
		final, endRec = next, final.redirect
	}
	allFix := txtRecord(d, withTerms(strings.Join(slices.DeleteFunc(strings.Fields(raw), func(f string) bool {
		return strings.EqualFold(strings.TrimLeft(f, "+-~?"), "all")
	}), " "), []string{"-all"}))
	if all, ok := final.all(); !ok {
		fine = false
		c.add(CheckSPF, LevelWarn, allFix, "SPF record of %s does not end with -all or ~all: forgeries get neutral", endRec)
	} else {
		switch all.qual {
		case '+':
			fine = false
			c.add(CheckSPF, LevelError, allFix, "SPF record of %s ends with %s: it authorises every address on the Internet", endRec, all.raw)
		case '?':
			fine = false
			c.add(CheckSPF, LevelWarn, allFix, "SPF record of %s ends with %s: forgeries get neutral", endRec, all.raw)
		}
	}
	for _, ip := range c.opts.SendingIPs {
		ev := &spfEval{spfEnv: env, ip: ip}
		res, why := ev.check(ctx, d, 0)
		if res == spfPass {
			continue
		}
		fine = false
		fix := ""
		if res != spfPermerror && res != spfTemperror {
			fix = txtRecord(d, withTerms(raw, c.spfTermsFor(ctx, []netip.Addr{ip}, false)))
		}
		c.add(CheckSPF, LevelError, fix, "SPF does not authorise sending address %s: result %s (%s)", ip, res, why)
	}
	if fine {
		c.add(CheckSPF, LevelOK, "", "SPF record %q authorises %s with %d of %d DNS lookups", raw, joinAddrs(c.opts.SendingIPs), n.lookups, spfMaxLookups)
	}
}

// checkHeloSPF checks the SPF record of the HELO name, which receivers
// check for bounces (empty MAIL FROM) and for the HELO identity.
func (c *checker) checkHeloSPF(ctx context.Context) {
	h := c.opts.Hostname
	if h == "" || h == c.opts.Domain || !strings.Contains(h, ".") || len(c.opts.SendingIPs) == 0 {
		return
	}
	fix := txtRecord(h, strings.Join(append(append([]string{"v=spf1"}, c.spfTermsFor(ctx, c.opts.SendingIPs, false)...), "-all"), " "))
	for _, ip := range c.opts.SendingIPs {
		ev := &spfEval{spfEnv: spfEnv{r: c.r}, ip: ip}
		res, why := ev.check(ctx, h, 0)
		switch res {
		case spfPass:
			continue
		case spfNone:
			c.add(CheckSPFHelo, LevelWarn, fix, "the HELO name %s has no SPF record: bounces and HELO checks get SPF none", h)
		default:
			c.add(CheckSPFHelo, LevelWarn, fix, "SPF of the HELO name %s does not authorise %s: result %s (%s)", h, ip, res, why)
		}
		return
	}
	c.add(CheckSPFHelo, LevelOK, "", "SPF of the HELO name %s authorises the sending addresses", h)
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}
