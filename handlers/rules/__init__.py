"""Pure rule engines: standard library only, `today`/`now` always passed in."""
