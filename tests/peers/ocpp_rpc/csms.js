'use strict';
// Strict OCPP CSMS for end-to-end tests, built on ocpp-rpc (an independent implementation).
// Protocol: one JSON object per line. stdout carries events only; stdin carries commands.
// Anything else the libraries print (ajv warnings) goes to stderr.
//
//   node csms.js [PORT] [--interval S] [--boot-status Accepted|Pending|Rejected]
//
// Events:   listening, connected, rejected, call (dir rx|tx), reply, reply_error, result, error,
//           strict_error, disconnected, ack, stopped, cmd_error
// Commands: call, set, close, stop (see README.md)

const path = require('path');
const readline = require('readline');
const { RPCServer, TimeoutError, createValidator } = require('ocpp-rpc');

// Keep stdout machine-readable: library chatter must never land between our event lines.
console.log = console.error;
console.info = console.error;

const PROTOCOLS = ['ocpp1.6', 'ocpp2.0.1', 'ocpp2.1'];
const BOOT_STATUSES = ['Accepted', 'Pending', 'Rejected'];

function emit(event) {
    process.stdout.write(JSON.stringify(event) + '\n');
}

function parseArgs(argv) {
    const opts = { port: 0, interval: Number(process.env.OCPP_CSMS_INTERVAL ?? 300), bootStatus: 'Accepted' };
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i];
        if (arg === '--interval') {
            opts.interval = Number(argv[++i]);
        } else if (arg === '--boot-status') {
            opts.bootStatus = argv[++i];
        } else if (arg === '--port') {
            opts.port = Number(argv[++i]);
        } else if (/^\d+$/.test(arg)) {
            opts.port = Number(arg);
        } else {
            throw Error(`unknown argument '${arg}'`);
        }
    }
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
        throw Error(`port must be 0..65535, got ${opts.port}`);
    }
    if (!Number.isInteger(opts.interval) || opts.interval < 0) {
        throw Error(`interval must be a non-negative integer, got ${opts.interval}`);
    }
    if (!BOOT_STATUSES.includes(opts.bootStatus)) {
        throw Error(`boot status must be one of ${BOOT_STATUSES.join('/')}, got ${opts.bootStatus}`);
    }
    return opts;
}

// ocpp-rpc 2.2.1 keys its bundled 2.1 schemas urn:XRequest / urn:XResponse while its strict mode
// looks up urn:X.req / urn:X.conf, so every 2.1 call would fail "schema missing". Re-key a copy.
function ocpp21Validator() {
    const schemaFile = path.join(path.dirname(require.resolve('ocpp-rpc')), 'lib', 'schemas', 'ocpp2_1.json');
    const schemas = require(schemaFile).map((schema) => {
        const id = schema.$id
            .replace(/^urn:(\w+)Request$/, 'urn:$1.req')
            .replace(/^urn:(\w+)Response$/, 'urn:$1.conf');
        return { ...schema, $id: id };
    });
    return createValidator('ocpp2.1', schemas);
}

const opts = parseArgs(process.argv.slice(2));
const state = {
    bootStatus: opts.bootStatus,
    interval: opts.interval,
    blocked: new Set(),
    invalid: new Set(),
    passwords: new Map(),
    nextTransactionId: 1,
};
const clients = new Map(); // identity -> newest RPCServerClient

const server = new RPCServer({
    protocols: PROTOCOLS,
    strictMode: true,
    strictModeValidators: [ocpp21Validator()],
    // OCPP allows one outstanding CALL per direction (OCPP-J 1.6 §4.1.1, 2.0.1 Part 4 §4.1.1).
    callConcurrency: 1,
});

server.auth((accept, reject, handshake) => {
    const protocol = PROTOCOLS.find((p) => handshake.protocols.has(p));
    const password = handshake.password === undefined ? null : handshake.password.toString('utf8');
    let reason = null;
    if (protocol === undefined) {
        // Without a subprotocol ocpp-rpc would skip strict validation; a strict peer refuses instead.
        reason = `no supported subprotocol in [${[...handshake.protocols].join(', ')}]`;
        reject(400, 'Unsupported subprotocol');
    } else if (state.passwords.has(handshake.identity) && state.passwords.get(handshake.identity) !== password) {
        reason = 'bad password';
        reject(401, 'Unauthorized');
    } else {
        accept({}, protocol);
        return;
    }
    emit({ ev: 'rejected', identity: handshake.identity, reason, headers: handshake.headers });
});

function now() {
    return new Date().toISOString();
}

function authStatus(idToken) {
    if (state.blocked.has(idToken)) return 'Blocked';
    if (state.invalid.has(idToken)) return 'Invalid';
    return 'Accepted';
}

function handlersFor(protocol) {
    const common = {
        BootNotification: () => ({ status: state.bootStatus, currentTime: now(), interval: state.interval }),
        Heartbeat: () => ({ currentTime: now() }),
        StatusNotification: () => ({}),
        MeterValues: () => ({}),
        DataTransfer: () => ({ status: 'Accepted' }),
        FirmwareStatusNotification: () => ({}),
        LogStatusNotification: () => ({}),
        SecurityEventNotification: () => ({}),
    };
    if (protocol === 'ocpp1.6') {
        return {
            ...common,
            Authorize: ({ params }) => ({ idTagInfo: { status: authStatus(params.idTag) } }),
            StartTransaction: ({ params }) => ({
                transactionId: state.nextTransactionId++,
                idTagInfo: { status: authStatus(params.idTag) },
            }),
            StopTransaction: () => ({}),
            DiagnosticsStatusNotification: () => ({}),
        };
    }
    return {
        ...common,
        Authorize: ({ params }) => ({ idTokenInfo: { status: authStatus(params.idToken?.idToken) } }),
        TransactionEvent: ({ params }) =>
            params.idToken ? { idTokenInfo: { status: authStatus(params.idToken.idToken) } } : {},
        NotifyReport: () => ({}),
        NotifyEvent: () => ({}),
    };
}

function errorInfo(err) {
    return {
        code: err instanceof TimeoutError ? 'Timeout' : (err.rpcErrorCode ?? err.name ?? 'Error'),
        message: err.message ?? String(err),
        details: err.details ?? {},
    };
}

server.on('client', (client) => {
    const identity = client.identity;
    const protocol = client.protocol;
    const rxActions = new Map(); // message id -> action, to label our replies

    clients.set(identity, client);
    emit({
        ev: 'connected',
        identity,
        protocol,
        endpoint: client.handshake.endpoint,
        password: client.handshake.password === undefined ? null : client.handshake.password.toString('utf8'),
        headers: client.handshake.headers,
    });

    for (const [action, handler] of Object.entries(handlersFor(protocol))) {
        client.handle(action, handler);
    }

    client.on('call', ({ outbound, payload }) => {
        const [, id, action, params] = payload;
        if (!outbound) rxActions.set(id, action);
        emit({ ev: 'call', dir: outbound ? 'tx' : 'rx', identity, action, payload: params, id });
    });

    client.on('response', ({ outbound, payload }) => {
        if (!outbound) return;
        const [type, id] = payload;
        const action = rxActions.get(id) ?? null;
        rxActions.delete(id);
        if (type === 3) {
            emit({ ev: 'reply', identity, action, id, payload: payload[2] });
        } else {
            emit({ ev: 'reply_error', identity, action, id, code: payload[2], message: payload[3] });
        }
    });

    // Every schema failure, whichever side produced the message (ocpp-rpc strict mode).
    client.on('strictValidationFailure', ({ messageId, method, params, result, error, outbound, isCall }) => {
        emit({
            ev: 'strict_error',
            identity,
            dir: outbound ? 'tx' : 'rx',
            kind: isCall ? 'call' : 'result',
            action: method,
            id: messageId,
            ...errorInfo(error),
            payload: isCall ? params : result,
        });
    });

    // Frames ocpp-rpc could not even parse as an OCPP-J message (bad JSON, bad type, unknown id).
    client.on('badMessage', ({ buffer, error, response }) => {
        emit({
            ev: 'strict_error',
            identity,
            dir: 'rx',
            kind: 'bad_message',
            action: null,
            id: null,
            ...errorInfo(error),
            frame: buffer.toString('utf8'),
            response,
        });
    });

    client.once('close', ({ code, reason }) => {
        if (clients.get(identity) === client) clients.delete(identity);
        emit({ ev: 'disconnected', identity, code, reason: String(reason ?? '') });
    });
});

async function doCall(cmd) {
    const client = clients.get(cmd.identity);
    const base = { id: cmd.id ?? null, identity: cmd.identity, action: cmd.action };
    if (!client) {
        emit({ ev: 'error', ...base, code: 'NotConnected', message: `no station '${cmd.identity}' connected`, details: {} });
        return;
    }
    try {
        const payload = await client.call(cmd.action, cmd.payload ?? {}, { callTimeoutMs: cmd.timeout_ms ?? 30000 });
        emit({ ev: 'result', ...base, payload });
    } catch (err) {
        emit({ ev: 'error', ...base, ...errorInfo(err) });
    }
}

function doSet(cmd) {
    if ('boot_status' in cmd) {
        if (!BOOT_STATUSES.includes(cmd.boot_status)) throw Error(`boot_status must be one of ${BOOT_STATUSES}`);
        state.bootStatus = cmd.boot_status;
    }
    if ('interval' in cmd) {
        if (!Number.isInteger(cmd.interval) || cmd.interval < 0) throw Error('interval must be an integer >= 0');
        state.interval = cmd.interval;
    }
    for (const key of ['blocked', 'invalid']) {
        if (key in cmd) {
            if (!Array.isArray(cmd[key])) throw Error(`${key} must be a list of id tokens`);
            state[key] = new Set(cmd[key].map(String));
        }
    }
    if ('passwords' in cmd) {
        if (typeof cmd.passwords !== 'object' || cmd.passwords === null) throw Error('passwords must be an object');
        state.passwords = new Map(Object.entries(cmd.passwords).map(([k, v]) => [k, String(v)]));
    }
    const known = new Set(['cmd', 'id', 'boot_status', 'interval', 'blocked', 'invalid', 'passwords']);
    const unknown = Object.keys(cmd).filter((k) => !known.has(k));
    if (unknown.length) throw Error(`unknown set keys: ${unknown.join(', ')}`);
}

async function doClose(cmd) {
    const client = clients.get(cmd.identity);
    if (!client) throw Error(`no station '${cmd.identity}' connected`);
    const closing = client.close({ code: cmd.code ?? 1000, reason: cmd.reason ?? 'closed by test', force: !!cmd.force });
    // A station that never answers the close handshake must not stall the test: cut it after 2 s.
    const timer = setTimeout(() => client.close({ force: true }), 2000);
    await closing;
    clearTimeout(timer);
}

let stopping = false;
async function doStop(cmd) {
    if (stopping) return;
    stopping = true;
    const timer = setTimeout(() => process.exit(0), 3000);
    try {
        await server.close({ code: 1001, reason: 'CSMS stopping', force: cmd.force ?? true });
    } catch (err) {
        process.stderr.write(`close failed: ${err.stack}\n`);
    }
    clearTimeout(timer);
    emit({ ev: 'stopped', id: cmd.id ?? null });
    process.exit(0);
}

async function onCommand(line) {
    if (!line.trim()) return;
    let cmd;
    try {
        cmd = JSON.parse(line);
        if (typeof cmd !== 'object' || cmd === null || Array.isArray(cmd)) throw Error('command must be an object');
    } catch (err) {
        emit({ ev: 'cmd_error', id: null, message: `bad command line: ${err.message}`, line });
        return;
    }
    try {
        switch (cmd.cmd) {
            case 'call':
                // Not awaited: the ack is the result/error event; other commands stay responsive meanwhile.
                doCall(cmd);
                return;
            case 'set':
                doSet(cmd);
                break;
            case 'close':
                await doClose(cmd);
                break;
            case 'stop':
                await doStop(cmd);
                return;
            default:
                throw Error(`unknown cmd '${cmd.cmd}'`);
        }
        emit({ ev: 'ack', id: cmd.id ?? null, cmd: cmd.cmd });
    } catch (err) {
        emit({ ev: 'cmd_error', id: cmd.id ?? null, cmd: cmd.cmd, message: err.message });
    }
}

async function main() {
    const httpServer = await server.listen(opts.port, '127.0.0.1');
    emit({ ev: 'listening', port: httpServer.address().port });
    const rl = readline.createInterface({ input: process.stdin });
    rl.on('line', onCommand);
    // Parent gone (stdin closed): shut down instead of lingering as an orphan.
    rl.on('close', () => doStop({ id: null }));
}

main().catch((err) => {
    process.stderr.write(`csms failed: ${err.stack}\n`);
    process.exit(1);
});
