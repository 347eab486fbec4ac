"""Members: lookup, registration (follow, mini-program), profile, the member QR card, data retention."""
