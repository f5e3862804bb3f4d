# shellcheck shell=sh
# AMQP through the LB reaches a node (protocol header answered).
# HACTL_PORT: the LB's AMQP port.
PORT=$HACTL_PORT python3 -c "
import os, socket
s = socket.create_connection(('127.0.0.1', int(os.environ['PORT'])), 3)
s.sendall(b'AMQP\x00\x00\x09\x01')
assert s.recv(8).startswith(b'\x01\x00\x00'), 'no AMQP connection.start'
"
