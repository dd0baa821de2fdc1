# sid-paths.sh — where the Debian sid root lives; sourced by sid-root.sh and
# sid-run.sh after they have set ROOT (the repository).
SID_DIR="$ROOT/.sid-root"
SID="$SID_DIR/root"
STAMP="$SID_DIR/ready"
LOCK="$SID_DIR/lock"
SID_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
