"""The mail path: SMTP, IMAP and pipe intake, the pipeline, the scanner, the answers."""
