import { createHash } from "node:crypto";
import { OnBehalfOfCredential, type AccessToken, type TokenCredential } from "@azure/identity";
import type { SessionToClose } from "../core/session";
import { backoffMs, type CloseOutcome } from "../core/closeOutcome";
import { AssertionDecryptionError } from "../core/AssertionCipher";
import { AssertionKeyUnknownError, LegacyAssertionRefusedError, type AssertionOpener } from "../core/assertionSealing";
import { classifyAuthorityError } from "./authorityErrors";
import { ReusedTokenCredential } from "./ReusedTokenCredential";
import { ManagedIdentityUnavailableError } from "./managedIdentity";
import { Codes } from "../core/codes";

/**
 * How the app registration proves itself in the exchange: a secret, a certificate, or a client
 * assertion made on demand (a managed identity's token the registration trusts as a federated credential).
 */
export type ClientCredential =
  | { kind: "secret"; secret: string }
  | { kind: "certificate"; certificatePath: string }
  | { kind: "assertion"; getAssertion: () => Promise<string> }
  /** None configured (a dry run's settings): every row is paused, nothing is asked of the authority. */
  | { kind: "none" };

export interface DelegatedCredentialsOptions {
  authorityHost: string;
  /** True for an authority Microsoft's instance discovery does not know (a national cloud is known). */
  disableInstanceDiscovery: boolean;
  /** The app registration's home tenant. */
  tenantId: string;
  clientId: string;
  clientCredential: ClientCredential;
  /** Tenants other than the home tenant whose users' sessions may be closed; `*` for any. @default none */
  additionallyAllowedTenants?: readonly string[];
  /** The delegated scope to ask for, e.g. `https://graph.microsoft.com/Files.ReadWrite`. */
  scope: string;
  /** Opens the assertions producers sealed with the sweeper's public key. */
  opener: Pick<AssertionOpener, "open">;
  /** Retries of the credential's own HTTP client. @default 3 (the SDK's) */
  maxRetries?: number;
  clock?: () => Date;
}

/** A user's credential, ready for a Graph call, or the outcome that ends the attempt. */
export type CredentialResult = { ok: true; credential: TokenCredential } | { ok: false; outcome: Exclude<CloseOutcome, { kind: "closed" }> };

/**
 * The user and tenant an assertion (an Entra access token, a JWT) was issued for. Read without
 * verifying: the authority verifies it in the exchange; this only makes sure the exchange would be
 * for the row's own user.
 */
function assertionOwner(assertion: string): { userId: string; tenantId: string } | undefined {
  const payload = assertion.split(".")[1];
  if (!payload) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { oid?: unknown; tid?: unknown };
    if (typeof claims.oid !== "string" || typeof claims.tid !== "string") return undefined;
    return { userId: claims.oid.toLowerCase(), tenantId: claims.tid.toLowerCase() };
  } catch {
    return undefined;
  }
}

interface UserEntry {
  readonly assertionDigest: string;
  /** The first token request's result; the credential caches later tokens itself. */
  readonly result: Promise<CredentialResult>;
}

/**
 * On-behalf-of credentials for the users whose sessions a sweep closes: one credential per user,
 * reused for all that user's sessions (so MSAL's token cache serves them), made from the user's
 * assertion recorded with the session (opened and checked to name the row's own user). A newer
 * assertion on another of the user's rows replaces one that has run out; a row whose user already
 * has a working credential is closed with it, its own assertion left sealed. Assertions are opened
 * only here, only to hand them to MSAL. Meant to live
 * as long as one sweep or one close request: it keeps a credential per user it has seen.
 */
export class DelegatedCredentials {
  private readonly users = new Map<string, UserEntry>();
  private readonly allowedTenants: Set<string>;
  private readonly clock: () => Date;

  constructor(private readonly options: DelegatedCredentialsOptions) {
    this.allowedTenants = new Set([options.tenantId, ...(options.additionallyAllowedTenants ?? [])].map((t) => t.toLowerCase()));
    this.clock = options.clock ?? (() => new Date());
  }

  get scope(): string {
    return this.options.scope;
  }

  /** Token requests are made here, not in the Graph call, so their errors are told apart from Graph's. */
  async forRow(row: SessionToClose): Promise<CredentialResult> {
    if (this.options.clientCredential.kind === "none") {
      return {
        ok: false,
        outcome: { kind: "paused", scope: "app", code: Codes.CredentialsNotConfigured, message: "The app's credential and assertion keys were not read (a dry run's settings): nothing is sent." },
      };
    }
    if (!this.allowedTenants.has("*") && !this.allowedTenants.has(row.tenantId.toLowerCase())) {
      return this.refuse(Codes.TenantNotAllowed, `Tenant ${row.tenantId} is not the app's tenant nor in AZURE_ADDITIONALLY_ALLOWED_TENANTS.`);
    }
    if (!row.encryptedAssertion) {
      return this.refuse(Codes.MissingAssertion, "The row carries no user assertion: the producer must record one to let the session be closed.");
    }
    // The user's credential serves all their rows (one partition is one user in one tenant): a
    // row's own assertion is opened only when there is none yet, or when it outlived its assertion.
    // Opening costs ~1.4 ms of CPU (HPKE); once per user, not once per row.
    const live = this.users.get(row.partitionKey);
    if (live) {
      const result = await live.result;
      if (result.ok || result.outcome.kind !== "expired") return result;
    }
    const opened = await this.openAssertion(row, row.encryptedAssertion);
    if (!opened.ok) return opened;
    // Single flight: rows of one user that arrive together wait for the first one's token.
    const current = this.users.get(row.partitionKey);
    if (current && (current !== live || current.assertionDigest === opened.digest)) {
      const result = await current.result;
      // The same assertion, or another row's credential that works: this row has nothing newer.
      if (result.ok || result.outcome.kind !== "expired" || current.assertionDigest === opened.digest) return result;
    }
    // The user's credential has outlived its assertion (or there was none); this row brings its own.
    return this.newEntry(row, opened.assertion, opened.digest).result;
  }

  /** The row's assertion, opened and checked to be its own user's, or the refusal that fails the row. */
  private async openAssertion(row: SessionToClose, sealed: string): Promise<{ ok: true; assertion: string; digest: string } | (CredentialResult & { ok: false })> {
    let assertion: string;
    try {
      assertion = await this.options.opener.open(sealed, row);
    } catch (error) {
      if (error instanceof AssertionDecryptionError || error instanceof AssertionKeyUnknownError || error instanceof LegacyAssertionRefusedError) {
        return this.refuse(error.code, error.message);
      }
      throw error;
    }
    const owner = assertionOwner(assertion);
    if (!owner || owner.userId !== row.userId.toLowerCase() || owner.tenantId !== row.tenantId.toLowerCase()) {
      // Whoever the assertion names is who Graph would act for: only the row's own user will do.
      return this.refuse(Codes.AssertionUserMismatch, "The stored assertion is not a token of the session's own user; nothing was sent.");
    }
    return { ok: true, assertion, digest: createHash("sha256").update(assertion).digest("base64url") };
  }

  private newEntry(row: SessionToClose, assertion: string, digest: string): UserEntry {
    const { options } = this;
    const common = {
      tenantId: row.tenantId,
      clientId: options.clientId,
      userAssertionToken: assertion,
      authorityHost: options.authorityHost,
      disableInstanceDiscovery: options.disableInstanceDiscovery,
      retryOptions: { maxRetries: options.maxRetries ?? 3 },
    };
    // The client assertion's own failure, kept: the credential may wrap it beyond recognition.
    const fault: { error?: ManagedIdentityUnavailableError } = {};
    const client = options.clientCredential;
    if (client.kind === "none") throw new Error("unreachable: forRow pauses without a credential");
    const credential =
      client.kind === "secret"
        ? new OnBehalfOfCredential({ ...common, clientSecret: client.secret })
        : client.kind === "certificate"
          ? new OnBehalfOfCredential({ ...common, certificatePath: client.certificatePath })
          : new OnBehalfOfCredential({
              ...common,
              getAssertion: () =>
                client.getAssertion().catch((error: unknown) => {
                  if (error instanceof ManagedIdentityUnavailableError) fault.error = error;
                  throw error;
                }),
            });
    const entry: UserEntry = { assertionDigest: digest, result: this.firstToken(credential, row, fault) };
    this.users.set(row.partitionKey, entry);
    // A failure is not kept: the user's next row tries again (with its own assertion).
    void entry.result.then((result) => {
      if (!result.ok && this.users.get(row.partitionKey) === entry) this.users.delete(row.partitionKey);
    });
    return entry;
  }

  private async firstToken(credential: OnBehalfOfCredential, row: SessionToClose, fault: { error?: unknown }): Promise<CredentialResult> {
    let token: AccessToken | null;
    try {
      token = await credential.getToken(this.options.scope);
    } catch (error) {
      return { ok: false, outcome: classifyAuthorityError(fault.error ?? error, { now: this.clock(), retryAfterMs: backoffMs(row.attempts) }) };
    }
    if (!token) return { ok: false, outcome: { kind: "retry", retryAt: this.later(row), cooldown: false, code: Codes.NoToken, message: "The authority returned no token." } };
    return { ok: true, credential: new ReusedTokenCredential(credential, token) };
  }

  private later(row: SessionToClose): Date {
    return new Date(this.clock().getTime() + backoffMs(row.attempts));
  }

  private refuse(code: string, message: string): CredentialResult & { ok: false } {
    return { ok: false, outcome: { kind: "failed", code, message } };
  }
}
