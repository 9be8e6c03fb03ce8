// The update mask of the admin user edit form (users.tsx): the paths of
// UpdateUser (inventory.proto: display_name, email, roles, disabled,
// external_subject) whose value the form changed. No imports: the console's
// unit tests load it under Node (server/test/user-mask.test.ts).
export interface UserFields {
  displayName: string;
  email: string;
  roles: readonly number[];
  disabled: boolean;
  externalSubject: string;
}

const sameRoles = (a: readonly number[], b: readonly number[]): boolean => {
  const x = [...a].sort((p, q) => p - q);
  const y = [...b].sort((p, q) => p - q);
  return x.length === y.length && x.every((v, i) => v === y[i]);
};

// The subject is compared and sent trimmed, as the new-user form sends it.
export function userUpdatePaths(before: UserFields, after: UserFields): string[] {
  return [
    after.displayName !== before.displayName ? 'display_name' : '',
    after.email !== before.email ? 'email' : '',
    !sameRoles(after.roles, before.roles) ? 'roles' : '',
    after.disabled !== before.disabled ? 'disabled' : '',
    after.externalSubject.trim() !== before.externalSubject ? 'external_subject' : '',
  ].filter(Boolean);
}
