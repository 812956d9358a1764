/**
 * Local stand-ins for the cloud services the app talks to, independent of the app itself (nothing
 * here imports from src/): what the tests, the bench and the demo run against. README.md says
 * what each one stands in for and how faithful it is.
 */
export { startStandIns, newAssertionKeyPair, type StandIns, type StandInsOptions } from "./startStandIns";
export { startAzurite, AzuriteStartError, type AzuriteInstance, type StartAzuriteOptions } from "./azurite";
export { loadTestCertificate, makeTestCertificate, trustedCertificateOrRerun, type TestCertificate } from "./certificate";
export { LocalHttpsServer } from "./localHttpsServer";
export {
  GRAPH_RESOURCE,
  STORAGE_RESOURCE,
  TOKEN_EXCHANGE_AUDIENCE,
  startFakeAuthority,
  type FailRule,
  type FakeAuthority,
  type FakeAuthorityOptions,
  type FederatedCredential,
  type GraphTokenClaims,
  type ManagedIdentity,
  type ManagedIdentityEnvironment,
  type ManagedIdentityRegistration,
  type ManagedIdentityRequestRecord,
  type TokenRequestRecord,
} from "./fakeAuthority";
export {
  drawLatency,
  startGraphEmulator,
  type CreateSessionAsync,
  type EmulatorBehaviour,
  type ExcelBudget,
  type LatencySpec,
  type LognormalLatency,
  type OperationStatus,
  type FaultRule,
  type GraphEmulator,
  type GraphEmulatorOptions,
  type RecordedRequest,
  type RequestKind,
  type SessionState,
} from "./graphEmulator";
export { startFunctionsWorker, type InvocationOutcome, type RunningWorker } from "./functionsWorker";
