package arc

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// parseTags parses a DKIM-style tag-list (RFC 6376 §3.2). Values are
// returned with surrounding folding whitespace trimmed; a duplicate tag, a
// tag without "=" or an invalid tag name is an error.
func parseTags(s string) (map[string]string, error) {
	tags := make(map[string]string)
	parts := strings.Split(s, ";")
	for i, p := range parts {
		p = strings.Trim(p, " \t\r\n")
		if p == "" {
			if i == len(parts)-1 {
				break // a trailing ";" is allowed
			}
			return nil, errors.New("empty tag")
		}
		name, val, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("tag %.20q without '='", p)
		}
		name = strings.Trim(name, " \t\r\n")
		if !validTagName(name) {
			return nil, fmt.Errorf("invalid tag name %.20q", name)
		}
		if _, dup := tags[name]; dup {
			return nil, fmt.Errorf("duplicate tag %q", name)
		}
		tags[name] = strings.Trim(val, " \t\r\n")
	}
	return tags, nil
}

func validTagName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alpha := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !alpha && (i == 0 || !('0' <= c && c <= '9' || c == '_')) {
			return false
		}
	}
	return true
}

// removeFWS drops all whitespace (base64 values may be folded).
func removeFWS(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}

// decodeB64 decodes a possibly folded base64 tag value.
func decodeB64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(removeFWS(s))
	if err != nil {
		return nil, fmt.Errorf("bad base64: %w", err)
	}
	return b, nil
}

// parseInstance parses an i= value: 1 to 3 decimal digits, no sign.
func parseInstance(s string) (int, error) {
	if s == "" || len(s) > 3 {
		return 0, fmt.Errorf("invalid instance %.10q", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("invalid instance %.10q", s)
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("invalid instance %.10q", s)
	}
	return n, nil
}

// splitAAR splits an ARC-Authentication-Results value ("i=N; payload",
// RFC 8617 §4.1.1) into the instance and the payload, unfolded and trimmed.
func splitAAR(v string) (int, string, error) {
	head, payload, ok := strings.Cut(v, ";")
	if !ok {
		return 0, "", errors.New("no ';' after instance")
	}
	name, num, ok := strings.Cut(head, "=")
	if !ok || strings.Trim(name, " \t\r\n") != "i" {
		return 0, "", errors.New("does not start with i=")
	}
	n, err := parseInstance(strings.Trim(num, " \t\r\n"))
	if err != nil {
		return 0, "", err
	}
	return n, unfold(payload), nil
}

// unfold removes line breaks and trims surrounding whitespace.
func unfold(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "")
	s = strings.ReplaceAll(s, "\n", "")
	return strings.Trim(s, " \t")
}
