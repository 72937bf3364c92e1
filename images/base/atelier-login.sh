# /etc/profile.d/atelier.sh: an SSH login shell gets the image's Python first on PATH.
# sshd sets the session's environment (atelier_lab._ssh), PATH included, but Debian's
# /etc/profile then resets PATH for login shells; this puts the session's back.
if [ -n "${ATELIER_LOGIN_PATH:-}" ]; then
    PATH="$ATELIER_LOGIN_PATH"
    export PATH
fi
