// Package dnsbl looks addresses and domains up on DNS lists (RFC 5782).
//
// A Checker screens clients of the MX listener: it asks every configured
// list about the client in parallel as soon as the client connects (Start),
// adds up the weights of the lists that list it, allow-lists counting
// negatively, and the acceptance path refuses the client's recipients when
// the score reaches the threshold (Postfix postscreen's dnsbl_sites and
// postscreen_dnsbl_threshold). Answers are kept for their TTL in a bounded
// cache; a list that does not answer in time, fails, or answers with an
// error code (127.255.255.x) counts as not listing the client.
//
// A Monitor checks Herald's own sending addresses and domains on lists
// periodically and keeps the listings it found (Status) for the console,
// alerts and metrics.
//
// The package is a foundation: it knows DNS, the clock and metrics, and
// nothing of the store or the pipeline.
package dnsbl
