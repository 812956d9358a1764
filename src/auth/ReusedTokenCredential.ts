import type { AccessToken, GetTokenOptions, TokenCredential } from "@azure/identity";

/** A token is handed out again while it has more than this left; then MSAL is asked for one. */
const REFRESH_MARGIN_MS = 5 * 60_000;

/**
 * Hands out the token the inner credential gave last while it has more than five minutes left.
 * MSAL keeps and renews the tokens; this only spares its cache lookup, which the Graph client's
 * auth provider runs on every request: at a few hundred closes a second the bench profile put
 * MSAL at a tenth of the sweeper's CPU (it builds an error with a stack trace on each lookup).
 */
export class ReusedTokenCredential implements TokenCredential {
  constructor(
    private readonly inner: TokenCredential,
    private token: AccessToken,
    private readonly now: () => number = Date.now,
  ) {}

  async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
    if (this.token.expiresOnTimestamp - this.now() > REFRESH_MARGIN_MS) return this.token;
    const fresh = await this.inner.getToken(scopes, options);
    if (fresh) this.token = fresh;
    return fresh;
  }
}
