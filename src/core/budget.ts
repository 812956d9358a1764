/** A request budget: at most `requests` in any `windowMs` (Excel's are per app per tenant, and per app). */
export interface RequestBudget {
  readonly requests: number;
  readonly windowMs: number;
}
