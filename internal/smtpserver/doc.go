package smtpserver

// Why the session engine is not go-smtp's Server.
//
// go-smtp v0.25.1 was read closely (conn.go, data.go, server.go) and these
// requirements cannot be met by wrapping its server:
//
//   - Its DATA reader drops the CR of a ".\r" at the start of a line when no
//     LF follows and then stops tracking line starts, so
//     "\r\n.\r\r\n.\r\n" is delivered as "\r\n\r\n.\r\n": an end-of-data
//     marker inside accepted content, and a bare CR silently removed. The
//     reader is built inside handleData, so it cannot be replaced.
//   - Its replies are fixed: unknown command 500 5.5.2 (we need 5.5.1), bad
//     sequence 502 (503), unknown parameter 500 5.5.4 (555), AUTH before TLS
//     523 5.7.10 (530 5.7.0), too long line "500 5.4.0" then close; errors
//     are counted only for some replies with a fixed limit of 3 ending in
//     500; there is no command limit per session.
//   - ReadTimeout bounds whole DATA transfers, and a non-SMTP error from
//     the backend's Data becomes "554 ... <error text>".
//   - The session is created at EHLO, after the greeting, so Connect
//     policy cannot answer before it.
//
// Wrapping all of that would mean a proxy that tracks the whole protocol
// state (including STARTTLS, which go-smtp performs below any wrapper), so
// Herald runs its own small session engine instead, with the strict readers
// of package message. go-sasl's PLAIN server and internal/auth's LOGIN
// server handle SASL. (Outbound, internal/delivery/smtpout is Herald's own
// client too; go-smtp is used only by the test MX in internal/testutil.)
