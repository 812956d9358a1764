import { SweeperError } from "../core/errors";
import { isSafeIdSegment, workbookItemPath, type WorkbookLocation } from "../core/workbookLocation";
import { Codes } from "../core/codes";
import { isSessionIdHeaderValue } from "../core/session";

/** A location or session id that would make a request to anything but …/workbook/closeSession. */
export class UnsafeRequestError extends SweeperError {
  readonly code = Codes.UnsafeLocation;
}

/** Graph's service root split the way the Graph client wants it: host and version. */
export interface GraphRoot {
  /** e.g. `https://graph.microsoft.com/` */
  readonly baseUrl: string;
  /** e.g. `v1.0` */
  readonly version: string;
  readonly host: string;
}

export function graphRoot(serviceRoot: string): GraphRoot {
  const url = new URL(serviceRoot.replace(/\/+$/, ""));
  const segments = url.pathname.split("/").filter(Boolean);
  const version = segments.pop();
  if (!version) throw new UnsafeRequestError(`GRAPH_BASE_URL ${url.href} names no API version (…/v1.0).`);
  const prefix = segments.length > 0 ? `/${segments.join("/")}/` : "/";
  return { baseUrl: `${url.origin}${prefix}`, version, host: url.hostname };
}

/**
 * The path (below the version) of closeSession for a workbook, every id checked and encoded.
 * Checked twice over: ids must be plain Graph ids, and the URL they make must resolve to exactly
 * this path under Graph's root, so no id can add a segment, a query or another host.
 */
export function closeSessionPath(root: GraphRoot, location: WorkbookLocation): string {
  const ids = idsOf(location);
  const unsafe = ids.filter((id) => !isSafeIdSegment(id));
  if (unsafe.length > 0) throw new UnsafeRequestError("The workbook location has an id that is not a plain Graph id; nothing was sent.");
  const path = workbookItemPath(location);
  const full = `${path}/workbook/closeSession`;
  const expected = `${root.baseUrl}${root.version}${full}`;
  const resolved = new URL(expected);
  if (resolved.href !== expected || resolved.search || resolved.hash || !resolved.pathname.endsWith("/workbook/closeSession")) {
    throw new UnsafeRequestError("The workbook location does not resolve to a closeSession URL under Graph's root; nothing was sent.");
  }
  return full;
}

/**
 * Graph session ids are printable ASCII. A header value with anything else would be refused by
 * fetch (and a CR or LF would be header injection), so such an id is refused before sending.
 */
export function checkSessionIdHeader(sessionId: string): void {
  if (!isSessionIdHeaderValue(sessionId)) {
    throw new UnsafeRequestError("The session id is not printable ASCII, so it cannot be a Graph session id; nothing was sent.");
  }
}

function idsOf(location: WorkbookLocation): string[] {
  switch (location.kind) {
    case "me":
      return [location.itemId];
    case "user":
      return [location.userId, location.itemId];
    case "drive":
      return [location.driveId, location.itemId];
    case "site":
      return [location.siteId, location.itemId];
  }
}
