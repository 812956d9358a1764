import type { TableClient } from "@azure/data-tables";
import { SessionAlreadyRecordedError, SessionNotFoundError, SessionNotOpenError, ValidationError, type InputProblem } from "../core/errors";
import { LedgerHistory } from "./history";
import { END_OF_TIME, MAX_LEASE_MS, MIN_LEASE_MS } from "./liveness";
import { decodeEntity, EVERY_COLUMN, SCHEMA_VERSION, TO_CLOSE, type SessionEntity } from "./entity";
import { MAX_SESSION_ID_LENGTH } from "../core/session";
import { isGuid } from "../core/keys";
import { formatWorkbookLocation, parseWorkbookLocation } from "../core/workbookLocation";
import { type SessionRecord } from "./models";
import { isTerminal, type SessionKey, type SessionToClose } from "../core/session";
import { keysOf, readRow, updateWithRetry } from "./rows";
import { createLedgerServiceClient, createLedgerTableClient, storageStatus, withTable, type LedgerClientOptions } from "./tableClient";
import type { QueueClient, QueueSendMessageResponse } from "@azure/storage-queue";
import { AssertionSealer } from "../core/AssertionSealer";
import { createQueueClient, type StorageConnection } from "./storageConnection";
import { DEFAULT_CLOSE_QUEUE, formatCloseRequestMessage, parseCloseRequestMessage } from "../core/closeRequestMessage";

/** A session a producing service has just opened with `createSession`. */
export interface RecordSessionInput extends SessionKey {
  /** Where the workbook is, in one of the forms of WORKBOOK_FORMS, e.g. `/drives/{drive-id}/items/{item-id}`. */
  workbook: string;
  /** As passed to createSession. @default true */
  persistChanges?: boolean;
  /** Which service recorded it, for operators. */
  recordedBy: string;
  /**
   * The access token your service received from its caller (the user), which the sweeper exchanges
   * on-behalf-of the user for a Graph token to close the session. Stored encrypted; wiped when the
   * row is finished.
   */
  userAssertion: string;
  /**
   * How long without a heartbeat before the sweeper may close the session (10 s to 24 h); heartbeat
   * at a fraction of it (a quarter leaves room for three missed beats).
   * @default the sweeper's STALE_AFTER
   */
  leaseMs?: number;
}

export interface SessionProducerOptions extends LedgerClientOptions {
  /**
   * ASSERTION_PUBLIC_KEY: the sweeper's public key (raw 32-byte X25519, or its base64/base64url),
   * that user assertions are sealed with. A producer holds no key that opens them.
   */
  assertionPublicKey: string | Uint8Array;
  /** The sweeper's close queue (CLOSE_QUEUE), for requestClose. fromConnection makes one. */
  closeQueue?: QueueClient;
  /** The clock for timestamps. @default the system clock */
  clock?: () => Date;
}

export interface TouchOptions {
  /** A new lease for the session from now on (10 s to 24 h). @default the lease it has */
  leaseMs?: number;
  /** The row you hold (from record or the last touch): saves a read while nothing else changed it. */
  known?: SessionToClose;
  /**
   * A fresher assertion from your caller. An assertion is valid for 60-90 minutes; a session kept
   * alive longer must hand over a new one, or the sweeper cannot close it after that.
   */
  userAssertion?: string;
  /** Stops the call (its reads and writes) where it is: a ledger that does not answer cannot hold the caller. */
  abortSignal?: AbortSignal;
}

const MAX_ASSERTION_LENGTH = 16_384;

/**
 * The producing services' side of the ledger: record each session right after createSession,
 * touch it while it is in use, release it after closing it yourself. A session the sweeper has
 * claimed can no longer be touched: the service gets SessionNotOpenError and must open a new one.
 */
export class SessionProducer {
  private readonly clock: () => Date;
  private readonly sealer: AssertionSealer;
  private readonly closeQueue: QueueClient | undefined;
  private readonly history: LedgerHistory | undefined;
  private queueCreating: Promise<void> | undefined;

  constructor(
    readonly client: TableClient,
    options: SessionProducerOptions & { history?: LedgerHistory },
  ) {
    this.clock = options.clock ?? (() => new Date());
    this.closeQueue = options.closeQueue;
    this.history = options.history;
    this.sealer = AssertionSealer.fromPublicKey(options.assertionPublicKey);
  }

  /**
   * The producer for the ledger in the account `connection` reaches: a connection string, or the
   * table and queue services' URLs with a credential (a managed identity: no storage key needed).
   * `closeQueueName` defaults to CLOSE_QUEUE's default, `workbook-session-close`.
   */
  static fromConnection(connection: StorageConnection, tableName: string, options: SessionProducerOptions & { closeQueueName?: string }): SessionProducer {
    const hasQueue = typeof connection === "string" || connection.queueServiceUrl !== undefined;
    const closeQueue = options.closeQueue ?? (hasQueue ? createQueueClient(connection, options.closeQueueName ?? DEFAULT_CLOSE_QUEUE) : undefined);
    const client = createLedgerTableClient(connection, tableName, options);
    const history = new LedgerHistory(client, {
      service: createLedgerServiceClient(connection, options),
      client: (name) => createLedgerTableClient(connection, name, options),
    });
    return new SessionProducer(client, { ...options, ...(closeQueue && { closeQueue }), history });
  }

  /** `fromConnection` with a connection string. */
  static fromConnectionString(connectionString: string, tableName: string, options: SessionProducerOptions & { closeQueueName?: string }): SessionProducer {
    return SessionProducer.fromConnection(connectionString, tableName, options);
  }

  /**
   * Records a new open session. Recording the same session again with the same details (a retry
   * after a lost answer) returns the existing row; with different details it throws
   * SessionAlreadyRecordedError.
   */
  async record(input: RecordSessionInput): Promise<SessionRecord> {
    const entity = await this.entityFor(input);
    try {
      // The first session recorded in a new storage account creates the ledger table.
      const response = await withTable(this.client, () => this.client.createEntity(entity));
      const decoded = decodeEntity({ ...entity, etag: response.etag ?? "" });
      // What was just built from validated input decodes; if not, say which column did not.
      if (!decoded.ok) throw new ValidationError(decoded.malformed.problems.map((message) => ({ field: "row", message })));
      return decoded.row;
    } catch (error) {
      if (storageStatus(error) !== 409) throw error;
      const existing = await this.mustRead(input);
      if (existing.status === "open" && formatWorkbookLocation(existing.workbook) === entity.workbook) return existing;
      throw new SessionAlreadyRecordedError(existing.status);
    }
  }

  /**
   * Heartbeat: the session is still in use. Conditional on the row's ETag (pass the row you hold
   * to save a read); throws SessionNotOpenError once a sweeper has claimed or finished the row.
   * Returns the row as a sweeper sees it (the columns it reads), to pass as `known` next time.
   */
  async touch(key: SessionKey, options: TouchOptions = {}): Promise<SessionToClose> {
    const problems = [assertionProblem(options.userAssertion ?? "unchanged"), leaseProblem(options.leaseMs)].filter((p): p is InputProblem => p !== undefined);
    if (problems.length > 0) throw new ValidationError(problems);
    return this.orFinished(
      key,
      () => this.heartbeat(key, options),
      (finished) => {
        throw new SessionNotOpenError(finished.status);
      },
      options.abortSignal,
    );
  }

  private async heartbeat(key: SessionKey, options: TouchOptions): Promise<SessionToClose> {
    // Sealed for this row's keys, as the sweeper will open it.
    const assertion = options.userAssertion !== undefined ? await this.sealer.seal(options.userAssertion, keysOf(key)) : undefined;
    return updateWithRetry(
      this.client,
      key,
      (row) => {
        if (row.status !== "open") throw new SessionNotOpenError(row.status);
        const now = this.clock();
        return {
          // A heartbeat: the service stamps this write, and no sweeper's mark hides it (see liveness.ts).
          heartbeatSeenAt: END_OF_TIME,
          schemaVersion: SCHEMA_VERSION,
          ...(options.leaseMs !== undefined && { leaseSeconds: options.leaseMs / 1_000 }),
          updatedAt: now,
          ...(assertion !== undefined && { assertion }),
        };
      },
      options,
    );
  }

  /**
   * The service closed the session itself (Graph answered its closeSession with 204). Idempotent:
   * a row already closed, expired or failed is left as it is. Returns the row as a sweeper sees it.
   */
  async release(key: SessionKey, options: Pick<TouchOptions, "known" | "abortSignal"> = {}): Promise<SessionToClose> {
    const released = await this.orFinished(
      key,
      () =>
        updateWithRetry(
          this.client,
          key,
          (row) => {
            if (isTerminal(row.status)) return undefined;
            const now = this.clock();
            return { status: "closed", closedAt: now, closedBy: "producer", updatedAt: now, finishedAt: now, assertion: "" };
          },
          options,
        ),
      (finished) => finished,
      options.abortSignal,
    );
    // Then it leaves the live table; if this process dies first, the next sweep moves it.
    if (isTerminal(released.status) && released.finishedAt) await this.history?.move([{ ...released, finishedAt: released.finishedAt }], options.abortSignal);
    return released;
  }

  /**
   * Runs `live` on the session's live row; where there is none because the session finished and
   * moved to history, answers with `finished` of the history row instead of SessionNotFoundError.
   */
  private async orFinished(
    key: SessionKey,
    live: () => Promise<SessionToClose>,
    finished: (row: SessionToClose) => SessionToClose,
    abortSignal: AbortSignal | undefined,
  ): Promise<SessionToClose> {
    try {
      return await live();
    } catch (error) {
      if (!(error instanceof SessionNotFoundError) || !this.history) throw error;
      const moved = await this.history.find(key, TO_CLOSE, abortSignal);
      if (!moved) throw error;
      return finished(moved);
    }
  }

  /**
   * Asks the sweeper to close this session now, whatever its age (the queue trigger does it).
   * Use it when your service gives up a session it cannot close itself. Returns the message id.
   */
  async requestClose(key: SessionKey, options: { requestedBy?: string; abortSignal?: AbortSignal } = {}): Promise<string> {
    if (!this.closeQueue) throw new ValidationError([{ field: "closeQueue", message: "is not set: pass closeQueue, or a connection with the queue service (a connection string or queueServiceUrl)" }]);
    const message = parseCloseRequestMessage({
      tenantId: key.tenantId,
      userId: key.userId,
      sessionId: key.sessionId,
      ...(options.requestedBy !== undefined && { requestedBy: options.requestedBy }),
    });
    const text = formatCloseRequestMessage(message);
    const response = await this.sendCreatingQueue(this.closeQueue, text, options.abortSignal);
    return response.messageId;
  }

  /**
   * Sends; the first request after the queue was deleted or never made creates it (one create for
   * concurrent senders) and sends again. Nothing is asked up front, so a sender allowed only to
   * add messages works as long as the queue exists.
   */
  private async sendCreatingQueue(queue: QueueClient, text: string, abortSignal?: AbortSignal): Promise<QueueSendMessageResponse> {
    const options = abortSignal ? { abortSignal } : {};
    try {
      return await queue.sendMessage(text, options);
    } catch (error) {
      if (storageStatus(error) !== 404) throw error;
    }
    this.queueCreating ??= queue
      .createIfNotExists(options)
      .then(() => undefined)
      .finally(() => (this.queueCreating = undefined));
    await this.queueCreating;
    return queue.sendMessage(text, options);
  }

  private async mustRead(key: SessionKey): Promise<SessionRecord> {
    const row = await readRow(this.client, key, EVERY_COLUMN);
    if (!row) throw new ValidationError([{ field: "sessionId", message: "names a row that vanished while it was being recorded" }]);
    return row;
  }

  private async entityFor(input: RecordSessionInput): Promise<SessionEntity> {
    const problems: InputProblem[] = [];
    if (!isGuid(input.tenantId)) problems.push({ field: "tenantId", message: "must be the tenant's GUID" });
    if (!isGuid(input.userId)) problems.push({ field: "userId", message: "must be the user's Entra object id (a GUID)" });
    if (typeof input.sessionId !== "string" || input.sessionId.length === 0) problems.push({ field: "sessionId", message: "must be a non-empty string" });
    else if (input.sessionId.length > MAX_SESSION_ID_LENGTH) problems.push({ field: "sessionId", message: `is longer than ${MAX_SESSION_ID_LENGTH} characters` });
    if (input.persistChanges !== undefined && typeof input.persistChanges !== "boolean") problems.push({ field: "persistChanges", message: "must be a boolean" });
    if (typeof input.recordedBy !== "string" || input.recordedBy.length === 0 || input.recordedBy.length > 200) {
      problems.push({ field: "recordedBy", message: "must be a non-empty string of at most 200 characters" });
    }
    let workbook = "";
    try {
      workbook = formatWorkbookLocation(parseWorkbookLocation(input.workbook));
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      problems.push(...error.problems);
    }
    const assertion = assertionProblem(input.userAssertion);
    if (assertion) problems.push(assertion);
    const lease = leaseProblem(input.leaseMs);
    if (lease) problems.push(lease);
    if (problems.length > 0) throw new ValidationError(problems);

    const now = this.clock();
    const keys = keysOf(input);
    return {
      ...keys,
      schemaVersion: SCHEMA_VERSION,
      tenantId: input.tenantId.toLowerCase(),
      userId: input.userId.toLowerCase(),
      sessionId: input.sessionId,
      workbook,
      persistChanges: input.persistChanges ?? true,
      createdAt: now,
      heartbeatSeenAt: END_OF_TIME,
      leaseSeconds: (input.leaseMs ?? 0) / 1_000,
      updatedAt: now,
      status: "open",
      attempts: 0,
      recordedBy: input.recordedBy,
      assertion: await this.sealer.seal(input.userAssertion, keys),
    };
  }
}

function leaseProblem(leaseMs: unknown): InputProblem | undefined {
  if (leaseMs === undefined) return undefined;
  if (typeof leaseMs !== "number" || !Number.isInteger(leaseMs / 1_000) || leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS) {
    return { field: "leaseMs", message: `must be whole seconds from ${MIN_LEASE_MS / 1_000} s to ${MAX_LEASE_MS / 3_600_000} h` };
  }
  return undefined;
}

function assertionProblem(assertion: unknown): InputProblem | undefined {
  if (typeof assertion !== "string" || assertion.length === 0) return { field: "userAssertion", message: "must be the caller's access token (a non-empty string)" };
  if (assertion.length > MAX_ASSERTION_LENGTH) return { field: "userAssertion", message: `is longer than ${MAX_ASSERTION_LENGTH} characters` };
  return undefined;
}
