#!/bin/sh
# Apply migrations, then run the given memberbot command (serve by default, or worker).
set -e
if [ "$1" = "serve" ]; then
  memberbot migrate
fi
exec memberbot "$@"
