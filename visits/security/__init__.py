"""Web hardening: the Content-Security-Policy and the sign-in throttle's handler."""
