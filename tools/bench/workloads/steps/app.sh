rm -rf /usr/share/locale /usr/share/i18n
dd if=/dev/urandom of=/opt/blob bs=1M count=20 status=none
echo "$BENCH_NONCE" > /opt/nonce
