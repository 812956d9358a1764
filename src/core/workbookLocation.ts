import { ValidationError } from "./errors";

/**
 * Where a workbook is, in one of the four forms Graph addresses a drive item by id. Path-addressed
 * items (`/root:/path:`) are refused: Graph's workbook API has been reported to fail on them, and
 * free-form paths are exactly what lets a row steer a request elsewhere.
 */
export type WorkbookLocation =
  | { readonly kind: "me"; readonly itemId: string }
  | { readonly kind: "user"; readonly userId: string; readonly itemId: string }
  | { readonly kind: "drive"; readonly driveId: string; readonly itemId: string }
  | { readonly kind: "site"; readonly siteId: string; readonly itemId: string };

/**
 * One id segment: letters, digits and the punctuation real drive, item, site and user ids use
 * (`b!…` drive ids, `host,guid,guid` site ids, `ABC!123` personal item ids, UPNs). No `/`, `\`,
 * `%`, `?`, `#`, `:`, whitespace or dot-segments, so nothing in an id can change the URL's path.
 */
const ID_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9!._,=@+$-]{0,399}$/;

const FORMS: readonly { pattern: RegExp; build: (ids: string[]) => WorkbookLocation }[] = [
  { pattern: /^\/me\/drive\/items\/([^/]+)$/, build: ([itemId]) => ({ kind: "me", itemId: itemId! }) },
  {
    pattern: /^\/users\/([^/]+)\/drive\/items\/([^/]+)$/,
    build: ([userId, itemId]) => ({ kind: "user", userId: userId!, itemId: itemId! }),
  },
  {
    pattern: /^\/drives\/([^/]+)\/items\/([^/]+)$/,
    build: ([driveId, itemId]) => ({ kind: "drive", driveId: driveId!, itemId: itemId! }),
  },
  {
    pattern: /^\/sites\/([^/]+)\/drive\/items\/([^/]+)$/,
    build: ([siteId, itemId]) => ({ kind: "site", siteId: siteId!, itemId: itemId! }),
  },
];

export const WORKBOOK_FORMS = [
  "/me/drive/items/{item-id}",
  "/users/{user-id}/drive/items/{item-id}",
  "/drives/{drive-id}/items/{item-id}",
  "/sites/{site-id}/drive/items/{item-id}",
] as const;

/** Parses and validates a workbook location; throws ValidationError saying what is wrong. */
export function parseWorkbookLocation(text: unknown): WorkbookLocation {
  if (typeof text !== "string" || text.length === 0) {
    throw new ValidationError([{ field: "workbook", message: `must be a non-empty string in one of the forms ${WORKBOOK_FORMS.join(", ")}` }]);
  }
  if (text.length > 1_000) throw new ValidationError([{ field: "workbook", message: "is longer than 1,000 characters" }]);
  for (const form of FORMS) {
    const match = form.pattern.exec(text);
    if (!match) continue;
    const ids = match.slice(1);
    const bad = ids.filter((id) => !isSafeIdSegment(id));
    if (bad.length > 0) {
      throw new ValidationError([
        { field: "workbook", message: `has an id that is not a plain Graph id (letters, digits and ! . _ , = @ + $ -, no '..'): ${bad.map(quote).join(", ")}` },
      ]);
    }
    return form.build(ids);
  }
  throw new ValidationError([{ field: "workbook", message: `${quote(text)} is not one of the forms ${WORKBOOK_FORMS.join(", ")}` }]);
}

export function isSafeIdSegment(id: string): boolean {
  return ID_SEGMENT.test(id) && !id.includes("..");
}

/** The canonical text of a location, as stored in the ledger: the inverse of parseWorkbookLocation. */
export function formatWorkbookLocation(location: WorkbookLocation): string {
  switch (location.kind) {
    case "me":
      return `/me/drive/items/${location.itemId}`;
    case "user":
      return `/users/${location.userId}/drive/items/${location.itemId}`;
    case "drive":
      return `/drives/${location.driveId}/items/${location.itemId}`;
    case "site":
      return `/sites/${location.siteId}/drive/items/${location.itemId}`;
  }
}

/**
 * The item's path under Graph's version root, each id URL-encoded (ids are plain Graph ids already:
 * parseWorkbookLocation refuses any other). `…/workbook/<operation>` follows it.
 */
export function workbookItemPath(location: WorkbookLocation): string {
  const e = encodeURIComponent;
  switch (location.kind) {
    case "me":
      return `/me/drive/items/${e(location.itemId)}`;
    case "user":
      return `/users/${e(location.userId)}/drive/items/${e(location.itemId)}`;
    case "drive":
      return `/drives/${e(location.driveId)}/items/${e(location.itemId)}`;
    case "site":
      return `/sites/${e(location.siteId)}/drive/items/${e(location.itemId)}`;
  }
}

/**
 * One key per workbook file, whatever form addresses it: `/me/…` of a user and `/users/{that user}/…`
 * are the same drive. Graph wants one request at a time per workbook, so the sweep serialises on this.
 */
export function workbookKey(location: WorkbookLocation, ownerUserId: string): string {
  switch (location.kind) {
    case "me":
      return `user:${ownerUserId.toLowerCase()}/${location.itemId}`;
    case "user":
      return `user:${location.userId.toLowerCase()}/${location.itemId}`;
    case "drive":
      return `drive:${location.driveId}/${location.itemId}`;
    case "site":
      return `site:${location.siteId}/${location.itemId}`;
  }
}

function quote(text: string): string {
  const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  return JSON.stringify(shown);
}
