"""The error codes a write (or read) response carries: Neuron's where Neuron has one.

====== =====================================================================================
code   meaning
====== =====================================================================================
0      written: the device confirmed every request (the exact echo)
1002   request body invalid (a uuid was readable, the rest was not)
2003   node not exist: no device of that name
2106   group not exist: the device has no group of that name
2201   tag not exist: the group has no tag of that name
3001   write failure: the device answered a Modbus exception; nothing was written
3002   device down: not connected; nothing was sent
3004   tag not writable: access is read (or the device's protocol takes no writes)
3011   tag not ready: (read) the group has not been polled yet
3007   tag type mismatch: the value's type does not fit the tag (a string for a number)
4001   out of range: the value does not fit the tag's type once scale and offset are undone
4002   not master: this node may not write (a backup, or a master that lost its term)
4003   outcome unknown: the request went out and no valid answer came, or a master that
       took over holds this uuid's intent without its result; the value may or may not
       have been written, and the request is never executed again
4004   not replicated: the peer is up but did not confirm the intent; nothing was sent,
       and the same uuid may be sent again
4005   intents not writable: the data dir cannot take the intent (read-only, full); nothing
       was sent, and the same uuid may be sent again
====== =====================================================================================
"""

from __future__ import annotations

import enum


class WriteCode(enum.IntEnum):
    OK = 0
    BAD_REQUEST = 1002
    NODE_NOT_EXIST = 2003
    GROUP_NOT_EXIST = 2106
    TAG_NOT_EXIST = 2201
    WRITE_FAILURE = 3001
    DEVICE_DOWN = 3002
    TAG_NOT_WRITABLE = 3004
    TYPE_MISMATCH = 3007
    TAG_NOT_READY = 3011
    OUT_OF_RANGE = 4001
    NOT_MASTER = 4002
    OUTCOME_UNKNOWN = 4003
    NOT_REPLICATED = 4004
    STORE_UNAVAILABLE = 4005


# REST status codes for each outcome: the body carries the code either way.
HTTP_STATUS: dict[WriteCode, int] = {
    WriteCode.OK: 200,
    WriteCode.BAD_REQUEST: 400,
    WriteCode.NODE_NOT_EXIST: 404,
    WriteCode.GROUP_NOT_EXIST: 404,
    WriteCode.TAG_NOT_EXIST: 404,
    WriteCode.WRITE_FAILURE: 502,
    WriteCode.DEVICE_DOWN: 503,
    WriteCode.TAG_NOT_WRITABLE: 422,
    WriteCode.TYPE_MISMATCH: 422,
    WriteCode.TAG_NOT_READY: 503,
    WriteCode.OUT_OF_RANGE: 422,
    WriteCode.NOT_MASTER: 421,
    WriteCode.OUTCOME_UNKNOWN: 504,
    WriteCode.NOT_REPLICATED: 503,
    WriteCode.STORE_UNAVAILABLE: 503,
}
