#!/bin/bash
# A/B: per-event cost in ws2http of an http:// vs https:// --backend-url (nginx answering "ok").
# usage: run.sh BIN N CLIENTS
set -e
BIN=$1; N=${2:-3000}; C=${3:-1}
D=$(dirname $0)
cd $D
if [ ! -f cert.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out req.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext.cnf
  openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null
fi
if [ ! -f nginx.pid ] || ! kill -0 $(cat nginx.pid) 2>/dev/null; then
  P=$PWD
  cat > nginx.conf <<NG
daemon on; worker_processes 1; pid $P/nginx.pid; error_log $P/error.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $P/body; keepalive_requests 1000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:18480; location / { default_type text/plain; return 200 "ok\n"; } }
  server { listen 127.0.0.1:18443 ssl; ssl_certificate $P/cert.pem; ssl_certificate_key $P/key.pem;
           location / { default_type text/plain; return 200 "ok\n"; } }
}
NG
  nginx -c $P/nginx.conf -p $P
fi
for url in http://127.0.0.1:18480/ev https://localhost:18443/ev; do
  mkdir -p cgi; 
  $BIN --listen 127.0.0.1:18080 --api-listen 127.0.0.1:18081 --cgi-bin cgi --backend-url $url $( [[ $url == https* ]] && echo --backend-ca ca.pem ) \
     --events message --max-queue 100000 --max-queue-bytes 100000000 --max-queue-bytes-total 1000000000 2>/dev/null >/dev/null &
  WS=$!
  until curl -s -o /dev/null http://127.0.0.1:18081/healthz; do sleep 0.05; done
  perf stat -x, -e task-clock -p $WS -o perf.out &
  PS=$!
  sleep 0.2
  start=$(date +%s.%N)
  pids=()
  for c in $(seq 1 $C); do
    (seq 1 $N | $BIN connect --linger 3 ws://127.0.0.1:18080/x 2>/dev/null | head -n $N | wc -l > got.$c) &
    pids+=($!)
  done
  wait "${pids[@]}"
  end=$(date +%s.%N)
  kill -INT $PS; wait $PS 2>/dev/null || true
  kill -TERM $WS; wait $WS 2>/dev/null || true
  got=$(cat got.* | paste -sd+ | bc)
  tc=$(grep task-clock perf.out | cut -d, -f1)
  echo "$url clients=$C events=$got cpu_us/event=$(echo "scale=1; $tc*1000/$got"|bc) wall_s=$(echo "$end-$start"|bc)"
  rm -f got.*
done
