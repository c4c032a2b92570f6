// Package bounce classifies SMTP failure replies (from a delivery attempt or
// from the Diagnostic-Code and Status of an asynchronous DSN) into a small set
// of categories and decides whether the failure is a hard bounce.
//
// # Suppression rule
//
// Only hard bounces suppress. A bounce is hard when the failure is permanent
// (a 5xx reply or a 5.x.x enhanced status) AND its category means the address
// itself will never work: CategoryMailboxUnknown or CategoryDomainNotFound.
// Every other failure is soft, including permanent ones: a policy or spam
// block, an authentication failure, a full mailbox or a message that is too
// large say something about this message or this sender, not about the
// recipient address, so suppressing the address would lose future mail that
// can be delivered once the cause is fixed.
package bounce

import (
	"strconv"
	"strings"

	"github.com/heraldmail/herald/internal/smtp"
)

// Categories returned in Class.Category.
const (
	CategoryMailboxUnknown  = "mailbox-unknown"   // the mailbox does not exist or is disabled
	CategoryDomainNotFound  = "domain-not-found"  // the domain has no mail server / does not exist
	CategoryMailboxFull     = "mailbox-full"      // over quota
	CategoryMessageTooLarge = "message-too-large" // size limit exceeded
	CategoryPolicy          = "policy"            // rejected by a local policy (5.7.x, sender checks)
	CategorySpamBlock       = "spam-block"        // spam filter, block list, reputation
	CategoryRateLimited     = "rate-limited"      // throttling: slow down and retry
	CategoryAuthFailure     = "auth-failure"      // SPF, DKIM or DMARC authentication failed
	CategoryRelayDenied     = "relay-denied"      // the server refuses to relay for the domain
	CategoryDNSFailure      = "dns-failure"       // temporary DNS failure
	CategoryConnection      = "connection"        // could not connect or the connection was lost
	CategoryContent         = "content"           // the content was refused (5.6.x, virus, malware)
	CategoryOther           = "other"             // anything else
)

const (
	hardPrefix, softPrefix    = "hard:", "soft:"
	enhancedClassPermanent    = 5
	basicCodePermanentMinimum = 500
)

// Class is the result of Classify.
type Class struct {
	// Hard is true for a permanent failure whose category means the address
	// will not work (see the package documentation). Only hard bounces
	// should add the recipient to a suppression list.
	Hard bool
	// Category is one of the Category* constants.
	Category string
}

// String formats the class as "hard:mailbox-unknown" or "soft:mailbox-full".
func (c Class) String() string {
	if c.Hard {
		return hardPrefix + c.Category
	}
	return softPrefix + c.Category
}

// Classify classifies a failure reply. code is the basic reply code (550),
// enhanced the RFC 3463 status (5.1.1) and text the reply text, which may span
// several lines and may itself start with the codes ("550-5.1.1 ..."), as a
// DSN Diagnostic-Code does. Missing values may be zero: a zero code or
// enhanced status is taken from the start of text when present there.
//
// The enhanced status decides when it is specific (5.1.1, 5.2.2, 4.4.1 ...);
// the text decides for generic statuses (x.0.0, 5.5.x, missing), and refines
// x.7.x into auth-failure, relay-denied, spam-block, rate-limited and policy.
func Classify(code int, enhanced smtp.EnhancedCode, text string) Class {
	tc, te := codesFromText(text)
	if code == 0 {
		code = tc
	}
	if enhanced == (smtp.EnhancedCode{}) {
		enhanced = te
	}
	lt := strings.ToLower(text)
	permanent := code >= basicCodePermanentMinimum || (code == 0 && enhanced[0] == enhancedClassPermanent)
	temporary := !permanent
	cat := categorize(code, enhanced, lt, temporary)
	return Class{
		Hard:     permanent && (cat == CategoryMailboxUnknown || cat == CategoryDomainNotFound),
		Category: cat,
	}
}

// Text patterns, matched against the lower-cased reply text.
var (
	authText = []string{
		"dmarc", "dkim", "spf ", "spf)", "spf,", "spf.", "(spf", " spf", "unauthenticated",
		"not authenticated", "authentication", "sender is unauthenticated",
		"reverse dns", "ptr record",
	}
	relayText  = []string{"relay access denied", "relaying denied", "relay not permitted", "unable to relay", "relaying not allowed", "relay denied", "not permitted to relay", "we do not relay", "relay access", "relaying"}
	senderText = []string{
		"sender address rejected", "sender verify failed", "sender verification failed",
		"sender domain", "sender rejected", "mail from rejected", "return path",
	}
	unknownText = []string{
		"user unknown", "unknown user", "no such user", "no such mailbox", "no such recipient",
		"does not exist", "doesn't exist", "doesn't have a",
		"recipient not found", "recipientnotfound", "mailbox not found", "mailbox unknown",
		"unknown recipient", "unknown mailbox", "invalid recipient", "invalid mailbox",
		"address unknown", "unknown address", "not a valid mailbox", "no mailbox here",
		"mailbox is disabled", "mailbox disabled", "account is disabled", "account has been disabled",
		"account disabled", "is disabled", "inactive", "unrouteable address", "unroutable address",
		"no such person", "recipient address rejected: user unknown", "address rejected: access denied",
		"requested action not taken: mailbox unavailable", "not listed in",
	}
	domainText = []string{
		"domain not found", "host or domain name not found", "no such domain", "nxdomain",
		"domain does not exist", "unknown domain", "domain name not found", "no mx", "null mx",
		"has no mail server", "does not accept mail",
	}
	fullText    = []string{"over quota", "quota exceeded", "mailbox full", "mailbox is full", "mailbox has exceeded", "insufficient storage", "out of storage", "exceeded storage"}
	sizeText    = []string{"message size", "too large", "too big", "size limit", "exceeds size", "exceeds maximum", "size exceeds"}
	contentText = []string{"virus", "malware", "infected", "security issue", "attachment", "content rejected", "message content"}
	spamText    = []string{
		"spam", "unsolicited", "blocked", "blacklist", "black list", "blocklist", "block list",
		"listed", "spamhaus", "barracuda", "spamcop", "rbl", "reputation", "banned", "junk",
	}
	rateText = []string{
		"too many", "rate limit", "rate-limit", "ratelimit", "try again later", "try later",
		"temporarily deferred", "deferred due to", "server busy", "receiving mail at a rate",
		"unusual rate", "too fast", "throttl", "exceeded the rate", "slow down",
	}
)

func has(s string, pats []string) bool {
	for _, p := range pats {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func categorize(code int, e smtp.EnhancedCode, lt string, temporary bool) string {
	// Authentication and relay replies are recognised whatever the status:
	// servers send them as 5.7.x, 5.7.26, 4.7.x or even 550 5.0.0.
	switch {
	case e[1] == 7 && e[2] >= 20 && e[2] <= 27:
		return CategoryAuthFailure // RFC 7372: DKIM, SPF, reverse DNS, DMARC
	case e[1] == 7 && e[2] == 8:
		return CategoryAuthFailure // authentication credentials invalid
	case has(lt, authText):
		return CategoryAuthFailure
	case has(lt, relayText):
		return CategoryRelayDenied
	}
	switch e[1] {
	case 1:
		switch e[2] {
		case 1, 3, 6, 10: // bad mailbox, bad syntax, moved, null MX recipient
			return CategoryMailboxUnknown
		case 2:
			return CategoryDomainNotFound
		case 7, 8: // problems with our sender address
			return CategoryPolicy
		}
	case 2:
		switch e[2] {
		case 1: // mailbox disabled, or (Gmail 4.2.1) receiving too fast
			if has(lt, rateText) {
				return CategoryRateLimited
			}
			return CategoryMailboxUnknown
		case 2:
			return CategoryMailboxFull
		case 3:
			return CategoryMessageTooLarge
		}
	case 3:
		if e[2] == 4 {
			return CategoryMessageTooLarge
		}
	case 4:
		switch e[2] {
		case 1, 2:
			// Exchange Online answers 5.4.1 "Recipient address rejected:
			// Access denied" for mailboxes that do not exist.
			if e[0] == enhancedClassPermanent && has(lt, unknownText) {
				return CategoryMailboxUnknown
			}
			return CategoryConnection
		case 3:
			return CategoryDNSFailure
		case 4:
			if e[0] == enhancedClassPermanent {
				return CategoryDomainNotFound
			}
			return CategoryDNSFailure
		}
	case 6:
		return CategoryContent
	case 7:
		switch {
		case temporary:
			return CategoryRateLimited
		case has(lt, contentText):
			return CategoryContent
		case has(lt, spamText), code == 554:
			return CategorySpamBlock
		}
		return CategoryPolicy
	}
	// Generic or unknown status: the text decides.
	switch {
	case strings.Contains(lt, "greylist") || strings.Contains(lt, "graylist"):
		return CategoryOther // greylisting: retry later, not a throttle
	case has(lt, senderText):
		return CategoryPolicy
	case has(lt, domainText):
		return CategoryDomainNotFound
	case has(lt, unknownText):
		return CategoryMailboxUnknown
	case has(lt, fullText):
		return CategoryMailboxFull
	case has(lt, sizeText):
		return CategoryMessageTooLarge
	case has(lt, contentText):
		return CategoryContent
	case temporary && (has(lt, rateText) || code == 421):
		return CategoryRateLimited
	case has(lt, spamText):
		return CategorySpamBlock
	case has(lt, rateText), code == 421:
		return CategoryRateLimited
	case strings.Contains(lt, "policy") || strings.Contains(lt, "prohibit") || strings.Contains(lt, "not allowed") || strings.Contains(lt, "denied"):
		return CategoryPolicy
	}
	return CategoryOther
}

// codesFromText parses a leading "550 5.1.1", "550-5.1.1" or "5.1.1" from a
// reply text. Missing or malformed parts are zero.
func codesFromText(text string) (int, smtp.EnhancedCode) {
	s := strings.TrimSpace(text)
	code := 0
	if len(s) >= 3 && isDigits(s[:3]) && (len(s) == 3 || s[3] == ' ' || s[3] == '-') {
		code, _ = strconv.Atoi(s[:3])
		if code < 200 || code > 599 {
			code = 0
		}
		s = strings.TrimLeft(s[3:], " -")
	}
	word := s
	if i := strings.IndexAny(word, " \t\r\n"); i >= 0 {
		word = word[:i]
	}
	parts := strings.Split(word, ".")
	if len(parts) != 3 {
		return code, smtp.EnhancedCode{}
	}
	var e smtp.EnhancedCode
	for i, p := range parts {
		if p == "" || len(p) > 3 || !isDigits(p) {
			return code, smtp.EnhancedCode{}
		}
		e[i], _ = strconv.Atoi(p)
	}
	if e[0] != 2 && e[0] != 4 && e[0] != 5 {
		return code, smtp.EnhancedCode{}
	}
	return code, e
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
