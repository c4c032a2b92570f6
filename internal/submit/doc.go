// Package submit is Herald's one acceptance path. Every source of mail goes
// through it: peers on the MX listener, authenticated submission users, API
// keys, `herald sendmail`, allow-listed clients, and the mail Herald writes
// itself (DSNs, TLS reports). An entry point only translates its protocol
// into a transaction on a Pipeline; every rule about what may be accepted
// lives here, once:
//
//  1. identity: who is sending (Identity, Kind), and for which account;
//  2. sender authorization: the envelope sender and every address of every
//     From: and Sender: field must be one the identity may use (Tx.Mail,
//     then the header check while the message streams);
//  3. recipient resolution: local mailboxes, aliases, catch-alls, forwards,
//     inbound HTTP routes, VERP feedback addresses, relaying (only for
//     identities that may relay), suppression lists (Tx.Rcpt);
//  4. limits: message size, recipient count, user and account sending
//     rates counted in recipients, free disk space;
//  5. header fix-ups for submissions: Date and Message-ID when missing
//     (RFC 6409 §8.3, §8.4), From from the envelope when missing;
//  6. signing: DKIM with the keys of the From: domain only, and only once
//     the identity is known to be allowed to use that domain;
//  7. the spool, which makes the message durable before anyone answers 250.
//
// Mail from anonymous MX peers is not signed; it is authenticated instead
// (SPF at MAIL FROM and RCPT TO, DKIM, ARC and DMARC while it streams), by
// the checks the composition root plugs in as Inbound.
package submit
