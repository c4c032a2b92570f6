// Package alias resolves the addresses of Herald's local domains: aliases,
// nested aliases, catch-alls and forwards to outside addresses, against the
// directory. Every source of mail expands recipients with it at acceptance,
// and submission checks with it which aliases deliver to a user.
package alias

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Directory is the part of store.Directory that local delivery reads.
// Addresses are stored lower-cased; GetAlias and GetUser return an error
// wrapping store.ErrNotFound for unknown addresses.
type Directory interface {
	GetAlias(ctx context.Context, address string) (store.Alias, error)
	GetUser(ctx context.Context, address string) (store.User, error)
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
}

// MaxAliasDepth is how many alias levels Expand follows.
const MaxAliasDepth = 10

// MaxExpansion bounds the number of addresses one expansion may produce.
const MaxExpansion = 1000

// ErrAliasDepth is returned when an alias chain is deeper than MaxAliasDepth.
var ErrAliasDepth = errors.New("alias: alias nesting too deep")

// ErrTooManyTargets is returned when an expansion produces more than
// MaxExpansion addresses.
var ErrTooManyTargets = errors.New("alias: alias expands to too many addresses")

// normalize lower-cases an address and converts its domain to A-labels. It
// returns the domain separately ("" if addr has no '@').
func normalize(addr string) (norm, domain string) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return strings.ToLower(addr), ""
	}
	local, dom := addr[:at], addr[at+1:]
	if d, err := smtp.NormalizeDomain(dom); err == nil {
		dom = d
	} else {
		dom = strings.ToLower(dom)
	}
	return strings.ToLower(local) + "@" + dom, dom
}

// Expand resolves addr, an address in a local domain, to the mailboxes and
// external addresses its mail goes to:
//
//   - an alias of that exact address gives its targets, each expanded in
//     turn when it is local (up to MaxAliasDepth levels);
//   - otherwise an existing user gives the address itself;
//   - otherwise a catch-all alias "@domain" gives its targets;
//   - otherwise the error wraps store.ErrNotFound.
//
// Matching is case-insensitive; local results are lower-cased, external
// targets are returned as written in the alias (the caller relays them).
// Results are de-duplicated. A loop (a -> b -> a) is cut where it closes: an
// address met again on its own expansion path is kept if it is a user
// ("bob -> bob, bob@elsewhere" keeps a local copy) and dropped otherwise.
// Local targets that do not exist are skipped with a warning; if nothing at
// all is left, the error wraps store.ErrNotFound.
//
// isLocal tells whether a domain is local; nil means dir.IsLocalDomain.
func Expand(ctx context.Context, dir Directory, addr string, isLocal func(domain string) bool) ([]string, error) {
	e := &expander{ctx: ctx, dir: dir, isLocal: isLocal, seen: make(map[string]bool), path: make(map[string]bool)}
	norm, domain := normalize(addr)
	if domain == "" {
		return nil, fmt.Errorf("alias: expand %q: %w", addr, store.ErrNotFound)
	}
	found, err := e.expandLocal(norm, domain, 0)
	if err != nil {
		return nil, fmt.Errorf("alias: expand %q: %w", addr, err)
	}
	if !found {
		return nil, fmt.Errorf("alias: expand %q: %w", addr, store.ErrNotFound)
	}
	if len(e.out) == 0 {
		return nil, fmt.Errorf("alias: expand %q: no deliverable target: %w", addr, store.ErrNotFound)
	}
	return e.out, nil
}

type expander struct {
	ctx     context.Context
	dir     Directory
	isLocal func(string) bool
	out     []string
	seen    map[string]bool // results, by normalized address
	path    map[string]bool // addresses being expanded (loop detection)
}

func (e *expander) emit(norm, original string) error {
	if e.seen[norm] {
		return nil
	}
	if len(e.out) >= MaxExpansion {
		return ErrTooManyTargets
	}
	e.seen[norm] = true
	e.out = append(e.out, original)
	return nil
}

func (e *expander) local(domain string) (bool, error) {
	if e.isLocal != nil {
		return e.isLocal(domain), nil
	}
	ok, err := e.dir.IsLocalDomain(e.ctx, domain)
	if err != nil {
		return false, fmt.Errorf("checking domain %q: %w", domain, err)
	}
	return ok, nil
}

// expandLocal expands norm, known to be in a local domain. It reports
// whether the address exists (alias, user or catch-all).
func (e *expander) expandLocal(norm, domain string, depth int) (bool, error) {
	if err := e.ctx.Err(); err != nil {
		return false, err
	}
	if depth > MaxAliasDepth {
		return false, ErrAliasDepth
	}
	if e.path[norm] {
		// Loop closed: keep it only as a real mailbox.
		isUser, err := e.isUser(norm)
		if err != nil {
			return false, err
		}
		if isUser {
			return true, e.emit(norm, norm)
		}
		return true, nil
	}
	a, err := e.dir.GetAlias(e.ctx, norm)
	switch {
	case err == nil:
		return true, e.expandTargets(norm, a.Targets, depth)
	case !errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("looking up alias %q: %w", norm, err)
	}
	isUser, err := e.isUser(norm)
	if err != nil {
		return false, err
	}
	if isUser {
		return true, e.emit(norm, norm)
	}
	catchAll := "@" + domain
	if e.path[catchAll] {
		return false, nil // a catch-all target that does not exist
	}
	a, err = e.dir.GetAlias(e.ctx, catchAll)
	switch {
	case err == nil:
		return true, e.expandTargets(catchAll, a.Targets, depth)
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("looking up alias %q: %w", catchAll, err)
	}
}

func (e *expander) isUser(norm string) (bool, error) {
	_, err := e.dir.GetUser(e.ctx, norm)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("looking up user %q: %w", norm, err)
	}
}

func (e *expander) expandTargets(from string, targets []string, depth int) error {
	e.path[from] = true
	defer delete(e.path, from)
	for _, t := range targets {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		norm, domain := normalize(t)
		if domain == "" {
			slog.WarnContext(e.ctx, "alias target without domain skipped", "alias", from, "target", t)
			continue
		}
		isLocal, err := e.local(domain)
		if err != nil {
			return err
		}
		if !isLocal {
			if err := e.emit(norm, t); err != nil {
				return err
			}
			continue
		}
		found, err := e.expandLocal(norm, domain, depth+1)
		if err != nil {
			return err
		}
		if !found {
			slog.WarnContext(e.ctx, "alias target does not exist, skipped", "alias", from, "target", norm)
		}
	}
	return nil
}

// Exists reports whether mail to addr would be accepted: an alias of that
// address, a user, or a catch-all alias of its domain exists. It does not
// check that the domain is local. Matching is case-insensitive.
func Exists(ctx context.Context, dir Directory, addr string) (bool, error) {
	norm, domain := normalize(addr)
	if domain == "" {
		return false, nil
	}
	for _, lookup := range []func() error{
		func() error { _, err := dir.GetAlias(ctx, norm); return err },
		func() error { _, err := dir.GetUser(ctx, norm); return err },
		func() error { _, err := dir.GetAlias(ctx, "@"+domain); return err },
	} {
		err := lookup()
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, store.ErrNotFound):
			return false, fmt.Errorf("alias: checking %q: %w", addr, err)
		}
	}
	return false, nil
}
