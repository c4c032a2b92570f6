package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// checkPublicURL accepts the base of the links Herald serves
// (platform.public_url): an http or https URL with a host and nothing
// else (no user information, path, query or fragment; a lone "/" is
// allowed). Links are built by appending "/unsubscribe/TOKEN" to it.
func checkPublicURL(s string) error {
	if len(s) > 255 {
		return errors.New("is longer than 255 bytes")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q is not an http or https URL", s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" ||
		strings.ContainsAny(s, " \t\r\n#?") {
		return fmt.Errorf("%q must be only a scheme and a host (and port), like https://mail.example.com", s)
	}
	return nil
}
