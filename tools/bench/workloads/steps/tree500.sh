# 500 MB in 11,675 files: 25 x 8 MB and 150 x 1 MB of random bytes (incompressible),
# 1,500 x 64 KB and 10,000 x 5 KB of text (compressible), in 100 directories.
set -e
mkdir -p /data
cd /data
i=0
while [ $i -lt 100 ]; do mkdir d$i; i=$((i + 1)); done
i=0
while [ $i -lt 25 ]; do dd if=/dev/urandom of=d$((i % 100))/big$i bs=1M count=8 status=none; i=$((i + 1)); done
i=0
while [ $i -lt 150 ]; do dd if=/dev/urandom of=d$((i % 100))/mid$i bs=1M count=1 status=none; i=$((i + 1)); done
seq 1 12000 > /tmp/text
head -c 65536 /tmp/text > /tmp/t64
head -c 5120 /tmp/text > /tmp/t5
i=0
while [ $i -lt 1500 ]; do cp /tmp/t64 d$((i % 100))/t$i; i=$((i + 1)); done
i=0
while [ $i -lt 10000 ]; do cp /tmp/t5 d$((i % 100))/s$i; i=$((i + 1)); done
rm -f /tmp/text /tmp/t64 /tmp/t5
