--! Previous: sha1:22df4f2cdcb3a40bcb13de17db04da03b310e79f
--! Hash: sha1:083399635954f60aa53e5f614c3053bf4eb7c152
--! Message: Review of the account lifecycle: a password change or ending the other sessions cancels a pending change of address (and cancelEmailChange); reset tokens no longer replace one another; only a member logged in creates keys or removes members; removal and demotion also revoke invitations; account changes lock the user first

-- Review of the account lifecycle (000028), as an attacker would try it:
-- - a change of address asked for by whoever knew the password survived a password change: changing
--   the password or ending the other sessions now cancels it, and cancelEmailChange does by hand;
-- - a stranger asking for a reset again replaced the token in the owner's mailbox: tokens no longer
--   replace one another (each works until used or expired; one reset uses up all of them);
-- - keys made with a key had no creator, so removing a member could not take them back: only a
--   member logged in creates keys; removing or demoting a member also revokes the invitations they
--   sent; removing a member needs a person, not a key;
-- - a reset racing a password change could deadlock: every account change locks the user first.

drop table if exists app_private.password_reset_tokens;
create table app_private.password_reset_tokens (
  token_hash bytea primary key,
  user_id uuid not null,
  email public.citext not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  constraint password_reset_tokens_user_must_exist foreign key (user_id) references app_public.users (id) on delete cascade,
  constraint password_reset_tokens_token_hash_must_be_a_sha256 check (pg_catalog.octet_length(token_hash) = 32)
);
create index password_reset_tokens_user_id_idx on app_private.password_reset_tokens (user_id, created_at);
comment on table app_private.password_reset_tokens is 'The password reset tokens of users who asked for one, as their SHA-256 only (the tokens themselves are only in the emails). A new token does not replace earlier ones (a stranger asking again must not cancel the one in the owner''s mailbox); all of a user''s tokens go when one is used, when the password is changed, or when the address changes; expired ones go when a new one is issued.';
comment on column app_private.password_reset_tokens.token_hash is 'SHA-256 of the token (sbr_ and 64 hex digits, 256 random bits).';
comment on column app_private.password_reset_tokens.user_id is 'The user.';
comment on column app_private.password_reset_tokens.email is 'The address the token was sent to (the token stops working if the account address changes).';
comment on column app_private.password_reset_tokens.expires_at is 'When the token stops working (1 hour after it was sent).';
comment on column app_private.password_reset_tokens.created_at is 'When the token was issued (at most one a minute per user).';
comment on index app_private.password_reset_tokens_user_id_idx is 'A user''s tokens, newest last: the once-a-minute check and the clean-ups.';
alter table app_private.password_reset_tokens enable row level security;
alter table app_private.password_reset_tokens force row level security;
create policy owner_all on app_private.password_reset_tokens for all to :DATABASE_OWNER using (true) with check (true);

comment on column app_public.api_keys.created_by is 'The member who created the key (only a member logged in creates keys); null once that member has left. Removing the member, or demoting them below the key''s role, revokes the key.';
comment on column app_public.invitations.invited_by is 'The member who sent the invitation; null when sent with an API key or when the inviter has left. Removing the member, or demoting them so that they could no longer send it, revokes it while pending.';

--! Included identity/revoke_member_grants.sql
create or replace function app_private.revoke_member_grants(user_id uuid, tenant_id uuid, keep_up_to text) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_ranks constant text[] := array['agent', 'manager', 'admin', 'owner'];
  v_keep integer := pg_catalog.array_position(v_ranks, revoke_member_grants.keep_up_to);
begin
  -- API keys the member created with a role above what they keep.
  update app_public.api_keys k set revoked_at = pg_catalog.now()
    where k.created_by = revoke_member_grants.user_id and k.revoked_at is null
      and (revoke_member_grants.tenant_id is null or k.tenant_id = revoke_member_grants.tenant_id)
      and (v_keep is null or pg_catalog.array_position(v_ranks, k.role) > v_keep);
  -- Pending invitations the member sent: all of them once they may no longer invite (below admin),
  -- otherwise those to a role above what they keep.
  with revoked as (
    update app_public.invitations i set revoked_at = pg_catalog.now()
      where i.invited_by = revoke_member_grants.user_id and i.accepted_at is null and i.revoked_at is null
        and (revoke_member_grants.tenant_id is null or i.tenant_id = revoke_member_grants.tenant_id)
        and (v_keep is null or v_keep < pg_catalog.array_position(v_ranks, 'admin')
             or pg_catalog.array_position(v_ranks, i.role) > v_keep)
      returning i.tenant_id, i.id
  )
  delete from app_private.invitation_tokens t using revoked r
    where t.tenant_id = r.tenant_id and t.invitation_id = r.id;
end;
$$;

comment on function app_private.revoke_member_grants(uuid, uuid, text) is 'Takes back what a member handed out: revokes the API keys they created with a role above keep_up_to, and the pending invitations they sent (all of them when keep_up_to is below admin, since they may no longer invite; otherwise those to a role above it). In one tenant, or in all when tenant_id is null; keep_up_to null revokes everything. Used when a member is removed or demoted, and when an account that never proved its address is reset. No permission checks: callers check.';
--! EndIncluded identity/revoke_member_grants.sql
--! Included identity/issue_password_reset_token.sql
create or replace function app_private.issue_password_reset_token(user_id uuid) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users;
  v_token text := 'sbr_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
begin
  select u.* into v_user from app_public.users u where u.id = issue_password_reset_token.user_id;
  if not found then
    raise exception 'No such user' using errcode = 'P0002';
  end if;
  -- A new token does not replace the earlier ones: anyone may ask for a reset of any address, and
  -- a stranger asking again must not make the token in the mailbox of the owner stop working.
  delete from app_private.password_reset_tokens t where t.user_id = v_user.id and t.expires_at <= pg_catalog.now();
  insert into app_private.password_reset_tokens (user_id, email, token_hash, expires_at)
    values (v_user.id, v_user.email, public.digest(v_token, 'sha256'), pg_catalog.now() + interval '1 hour');
  perform app_private.queue_email(null, v_user.email::text, 'Reset your Switchboard password',
    E'Someone asked to reset the password of the Switchboard account with this address. Your reset token:\n\n  '
      || v_token || E'\n\n'
      || E'Choose a new password with it (no login needed):\n\n'
      || '  mutation { resetPassword(input: { token: "' || v_token || E'", newPassword: "..." }) { result } }\n\n'
      || E'The token works once and expires in 1 hour. Resetting logs out every session of the account.\n'
      || E'If you did not ask for this, ignore this email: your password stays as it is.\n',
    'transactional', from_name => 'Switchboard');
end;
$$;

comment on function app_private.issue_password_reset_token(uuid) is 'Gives a user a new random password reset token (256 bits; only its SHA-256 is kept, in app_private.password_reset_tokens; earlier unexpired tokens keep working, so nobody can cancel the one the owner holds by asking again), valid 1 hour, and emails it to their address through the outbox (transactional, no tenant, so no request can read it). No permission checks: callers check. Errors: P0002 no such user.';
--! EndIncluded identity/issue_password_reset_token.sql
--! Included identity/reset_password.sql
create or replace function app_public.reset_password(token text, new_password text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users;
  v_hash bytea;
  v_user_id uuid;
begin
  -- A weak password is refused before the token is looked at, so the token still works afterwards.
  perform app_private.validate_password(reset_password.new_password);
  -- Tokens are 68 characters; anything much longer is refused without hashing it.
  if reset_password.token is not null and pg_catalog.length(reset_password.token) <= 200 then
    v_hash := public.digest(reset_password.token, 'sha256');
    select t.user_id into v_user_id from app_private.password_reset_tokens t where t.token_hash = v_hash;
  end if;
  -- The account first, then its token: the order every account change locks in, so none deadlock.
  if v_user_id is not null then
    select u.* into v_user from app_public.users u where u.id = v_user_id for update;
    delete from app_private.password_reset_tokens t
    where t.token_hash = v_hash and t.user_id = v_user.id and t.expires_at > pg_catalog.now() and t.email = v_user.email;
    if not found then
      v_user := null;
    end if;
  end if;
  if v_user.id is null then
    raise exception 'This password reset token is not valid: it may have expired or been used already' using errcode = 'P0002';
  end if;
  -- One reset uses up every reset token of the account.
  delete from app_private.password_reset_tokens t where t.user_id = v_user.id;

  update app_private.user_secrets s set
    password_hash = public.crypt(reset_password.new_password, public.gen_salt('bf', 10)),
    password_changed_at = pg_catalog.now(),
    failed_login_attempts = 0,
    first_failed_login_at = null,
    locked_until = null
  where s.user_id = v_user.id;

  -- Whoever held a session (or knew the old password) is out: every session of the account ends.
  update app_public.user_sessions s set revoked_at = pg_catalog.now()
    where s.user_id = v_user.id and s.revoked_at is null;
  -- A pending change of address was asked for by whoever held the account before: it is dropped.
  delete from app_private.email_change_requests r where r.user_id = v_user.id;

  -- The token came to this address, so its owner has now proved it. If nobody had before, the account
  -- may have been registered by a stranger who never owned the address: the API keys it created and
  -- the invitations it sent, in every tenant, are revoked, so what that stranger handed out stops working.
  if v_user.email_verified_at is null then
    update app_public.users u set email_verified_at = pg_catalog.now() where u.id = v_user.id;
    delete from app_private.email_verification_tokens t where t.user_id = v_user.id;
    perform app_private.revoke_member_grants(v_user.id, null, null);
  end if;

  perform app_private.send_account_notice(v_user.id, v_user.email::text, 'Your Switchboard password was reset',
    E'The password of the Switchboard account with this address was reset with a token sent here, and every session of the account was logged out.');
  return true;
end;
$$;

comment on function app_public.reset_password(text, text) is 'Sets a new password with the token from the password reset email (no login needed). The token is used up, every session of the account is logged out, and a notice is emailed. Resetting proves the address: an account that had never verified it becomes verified, and the API keys it created and the invitations it sent are revoked (a stranger who registered the address first keeps no way in). One reset uses up every reset token of the account. Rate limited per client address (RATE_LIMITED). Errors: 22023 weak password (at least 10 characters with a letter and a digit or symbol; the token still works); P0002 the token is unknown, expired or used (one error for all).';

grant execute on function app_public.reset_password(text, text) to :DATABASE_VISITOR;
--! EndIncluded identity/reset_password.sql
--! Included identity/change_password.sql
create or replace function app_public.change_password(current_password text, new_password text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_user app_public.users := app_private.require_current_password(change_password.current_password, 'change your password');
begin
  perform app_private.validate_password(change_password.new_password);
  if change_password.new_password = change_password.current_password then
    raise exception 'The new password must differ from the current one' using errcode = '22023';
  end if;
  update app_private.user_secrets s set
    password_hash = public.crypt(change_password.new_password, public.gen_salt('bf', 10)),
    password_changed_at = pg_catalog.now()
  where s.user_id = v_user.id;
  -- Every other session ends; the one making the change goes on.
  update app_public.user_sessions s set revoked_at = pg_catalog.now()
    where s.user_id = v_user.id and s.revoked_at is null and s.id is distinct from app_public.current_session_id();
  -- A reset token emailed earlier would undo the change, and a pending change of address (asked for by
  -- whoever knew the old password) would hand the account over: both stop working.
  delete from app_private.password_reset_tokens t where t.user_id = v_user.id;
  delete from app_private.email_change_requests r where r.user_id = v_user.id;
  perform app_private.send_account_notice(v_user.id, v_user.email::text, 'Your Switchboard password was changed',
    E'The password of the Switchboard account with this address was changed, and every other session of the account was logged out.');
  return true;
end;
$$;

comment on function app_public.change_password(text, text) is 'Changes your password; asks for the current one. Your other sessions are logged out (this one goes on), pending password reset tokens and a pending change of address stop working, and a notice is emailed to your address. Logged-in users only (not API keys). Rate limited per client address and per account (RATE_LIMITED). Errors: 28000 not logged in; 28P01 the current password is not correct; 22023 weak new password (at least 10 characters with a letter and a digit or symbol) or the same as the current one.';

grant execute on function app_public.change_password(text, text) to :DATABASE_VISITOR;
--! EndIncluded identity/change_password.sql
--! Included identity/revoke_other_sessions.sql
create or replace function app_public.revoke_other_sessions() returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id uuid := app_public.current_user_id();
  v_count integer;
begin
  if v_user_id is null then
    raise exception 'You must be logged in to end your other sessions' using errcode = '28000';
  end if;
  update app_public.user_sessions s set revoked_at = pg_catalog.now()
    where s.user_id = v_user_id and s.revoked_at is null and s.expires_at > pg_catalog.now()
      and s.id <> app_public.current_session_id();
  get diagnostics v_count = row_count;
  -- Distrusting the other sessions includes a change of address one of them may have asked for.
  delete from app_private.email_change_requests r where r.user_id = v_user_id;
  return v_count;
end;
$$;

comment on function app_public.revoke_other_sessions() is 'Ends every one of your sessions except the one making this request ("log out everywhere else"); returns how many were ended. A pending change of address is cancelled too (one of those sessions may have asked for it). Logged-in users only. Errors: 28000 not logged in.';

grant execute on function app_public.revoke_other_sessions() to :DATABASE_VISITOR;
--! EndIncluded identity/revoke_other_sessions.sql
--! Included identity/confirm_email_change.sql
create or replace function app_public.confirm_email_change(token text) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_request app_private.email_change_requests;
  v_hash bytea;
  v_user_id uuid;
begin
  -- Tokens are 68 characters; anything much longer is refused without hashing it.
  if confirm_email_change.token is not null and pg_catalog.length(confirm_email_change.token) <= 200 then
    v_hash := public.digest(confirm_email_change.token, 'sha256');
    select r.user_id into v_user_id from app_private.email_change_requests r where r.token_hash = v_hash;
  end if;
  -- The account first, then the request: the order every account change locks in, so none deadlock.
  if v_user_id is not null then
    perform 1 from app_public.users u where u.id = v_user_id for update;
    delete from app_private.email_change_requests r
    using app_public.users u
    where r.token_hash = v_hash and r.user_id = v_user_id and r.expires_at > pg_catalog.now()
      and u.id = r.user_id and u.email = r.old_email
    returning r.* into v_request;
  end if;
  if v_request.user_id is null then
    raise exception 'This email change token is not valid: it may have expired or been used already' using errcode = 'P0002';
  end if;
  begin
    update app_public.users u set email = v_request.new_email, email_verified_at = pg_catalog.now()
      where u.id = v_request.user_id;
  exception when unique_violation then
    raise exception 'Another account already uses this email address: log in to that account, or ask for a change to another address'
      using errcode = '23505';
  end;
  -- The profiles that showed the old address show the new one.
  update app_public.user_profiles p set email = v_request.new_email
    where p.user_id = v_request.user_id and p.email = v_request.old_email;
  -- Tokens sent to the old address stop working.
  delete from app_private.email_verification_tokens t where t.user_id = v_request.user_id;
  delete from app_private.password_reset_tokens t where t.user_id = v_request.user_id;
  perform app_private.send_account_notice(v_request.user_id, v_request.old_email::text, 'Your Switchboard email address was changed',
    'The login of the Switchboard account that used this address is now ' || v_request.new_email::text || '.');
  return true;
end;
$$;

comment on function app_public.confirm_email_change(text) is 'Finishes a change of login email address with the token sent to the new address (no login needed): the account then logs in with the new address, which counts as verified, tokens sent to the old address stop working, and a notice goes to the old address. The token is used up. Rate limited per client address (RATE_LIMITED). Errors: P0002 the token is unknown, expired or used, or the account changed address since (one error for all); 23505 another account took the address meanwhile (nothing changes).';

grant execute on function app_public.confirm_email_change(text) to :DATABASE_VISITOR;
--! EndIncluded identity/confirm_email_change.sql
--! Included identity/cancel_email_change.sql
create or replace function app_public.cancel_email_change() returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_user_id uuid := app_public.current_user_id();
begin
  if v_user_id is null then
    raise exception 'You must be logged in to cancel a change of email address' using errcode = '28000';
  end if;
  perform 1 from app_public.users u where u.id = v_user_id for update;
  delete from app_private.email_change_requests r where r.user_id = v_user_id;
  return found;
end;
$$;

comment on function app_public.cancel_email_change() is 'Cancels your pending change of login address (the token sent to the new address stops working), for example one you did not ask for. Returns whether there was one. Changing your password or ending your other sessions cancels it too. Logged-in users only. Errors: 28000 not logged in.';

grant execute on function app_public.cancel_email_change() to :DATABASE_VISITOR;
--! EndIncluded identity/cancel_email_change.sql
--! Included identity/create_api_key.sql
create or replace function app_public.create_api_key(name text, role text default 'agent') returns app_public.created_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'create API keys');
  v_name text := nullif(pg_catalog.btrim(create_api_key.name), '');
  v_role text := coalesce(nullif(pg_catalog.btrim(create_api_key.role), ''), 'agent');
  v_creator uuid := app_public.current_user_id();
  v_id uuid := pg_catalog.gen_random_uuid();
  v_secret text;
  v_key app_public.api_keys;
begin
  -- A key makes no keys: its creator would be nobody, and removing the member who made the first key
  -- could not take back the ones made with it.
  if v_creator is null then
    raise exception 'API keys can only be created by a member who is logged in, not with an API key' using errcode = '42501';
  end if;
  if v_name is null then
    raise exception 'API key name is required' using errcode = '22023';
  end if;
  if v_role not in ('admin', 'manager', 'agent') then
    raise exception 'Invalid role ''%'' for an API key: use admin, manager or agent', v_role using errcode = '22023';
  end if;
  v_secret := 'sbk_' || pg_catalog.replace(v_id::text, '-', '') || '_' || pg_catalog.encode(public.gen_random_bytes(32), 'hex');
  insert into app_public.api_keys (id, tenant_id, name, role, prefix, created_by)
    values (v_id, v_tenant_id, v_name, v_role, pg_catalog.left(v_secret, 12), v_creator)
    returning * into v_key;
  insert into app_private.api_key_secrets (api_key_id, tenant_id, key_hash)
    values (v_id, v_tenant_id, public.digest(v_secret, 'sha256'));
  return (v_key.id, v_key.tenant_id, v_key.name, v_key.role, v_key.prefix, v_key.created_at, v_secret)::app_public.created_api_key;
end;
$$;
comment on function app_public.create_api_key(text, text) is 'Creates an API key for the current tenant with a role (admin, manager or agent; default agent) and returns it with its secret, which is shown only this once. Owners and admins, logged in (not with another API key: every key has a member who made it, and removing or demoting that member revokes it). Errors: 42501 not allowed, or with an API key; 22023 blank name or invalid role.';

grant execute on function app_public.create_api_key(text, text) to :DATABASE_VISITOR;
--! EndIncluded identity/create_api_key.sql
--! Included identity/remove_member.sql
create or replace function app_public.remove_member(user_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'remove members');
  v_target app_public.memberships;
begin
  -- A person decides who leaves, not a key that might have leaked.
  if app_public.current_user_id() is null then
    raise exception 'Members can only be removed by a member who is logged in, not with an API key' using errcode = '42501';
  end if;
  -- Serialise membership removals and role changes per tenant so two owners cannot remove each other at once.
  perform 1 from app_public.tenants t where t.id = v_tenant_id for no key update;
  -- Checked again now that the lock is held: the caller may have been demoted while waiting.
  perform app_private.require_tenant_role('admin', 'remove members');
  select m.* into v_target
  from app_public.memberships m
  where m.tenant_id = v_tenant_id and m.user_id = remove_member.user_id;
  if v_target.id is null then
    raise exception 'That user is not a member of this tenant' using errcode = 'P0002';
  end if;
  if v_target.role = 'owner' then
    if not app_hidden.current_user_has_role('owner') then
      raise exception 'Only owners can remove owners' using errcode = '42501';
    end if;
    if (select pg_catalog.count(*) from app_public.memberships m where m.tenant_id = v_tenant_id and m.role = 'owner') <= 1 then
      raise exception 'The last owner cannot be removed: make someone else an owner first' using errcode = '42501';
    end if;
  end if;
  -- The API keys the member created stop working (they may still hold the secrets), and so do the
  -- invitations they sent. Deleting the membership sets created_by and invited_by to null, so this comes first.
  perform app_private.revoke_member_grants(v_target.user_id, v_tenant_id, null);
  delete from app_public.memberships m where m.id = v_target.id;
  return true;
end;
$$;

comment on function app_public.remove_member(uuid) is 'Removes a member from the current tenant (their profile goes too; their next request no longer sees the tenant) and revokes the API keys they created (they may still hold the secrets) and the invitations they sent. Owners and admins, logged in (not with an API key); only owners can remove owners, and the last owner cannot be removed. Errors: 42501 not allowed, with an API key, or the last owner; P0002 not a member.';

grant execute on function app_public.remove_member(uuid) to :DATABASE_VISITOR;
--! EndIncluded identity/remove_member.sql
--! Included identity/change_member_role.sql
create or replace function app_public.change_member_role(user_id uuid, role text) returns app_public.memberships
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  v_tenant_id uuid := app_private.require_tenant_role('admin', 'change roles');
  v_role text := pg_catalog.btrim(change_member_role.role);
  v_target app_public.memberships;
begin
  -- A person decides who holds power, not a key that might have leaked.
  if app_public.current_user_id() is null then
    raise exception 'Roles can only be changed by a member who is logged in, not with an API key' using errcode = '42501';
  end if;
  if v_role is null or v_role not in ('owner', 'admin', 'manager', 'agent') then
    raise exception 'Invalid role ''%'': use owner, admin, manager or agent', coalesce(v_role, '') using errcode = '22023';
  end if;
  -- Serialise role changes and removals per tenant (remove_member takes the same lock), so two
  -- owners demoting each other at once cannot leave the tenant without one.
  perform 1 from app_public.tenants t where t.id = v_tenant_id for no key update;
  -- Checked again now that the lock is held: the caller may have been demoted while waiting.
  perform app_private.require_tenant_role('admin', 'change roles');
  select m.* into v_target
  from app_public.memberships m
  where m.tenant_id = v_tenant_id and m.user_id = change_member_role.user_id
  for update;
  if v_target.id is null then
    raise exception 'That user is not a member of this tenant' using errcode = 'P0002';
  end if;
  if v_target.role = v_role then
    return v_target;
  end if;
  if (v_target.role = 'owner' or v_role = 'owner') and not app_hidden.current_user_has_role('owner') then
    raise exception 'Only owners can make someone an owner or change the role of an owner' using errcode = '42501';
  end if;
  if v_target.role = 'owner' and (
    select pg_catalog.count(*) from app_public.memberships m where m.tenant_id = v_tenant_id and m.role = 'owner'
  ) <= 1 then
    raise exception 'The last owner cannot be demoted: make someone else an owner first' using errcode = '42501';
  end if;
  update app_public.memberships m set role = v_role where m.id = v_target.id returning m.* into v_target;
  -- What the member handed out beyond the new role stops working: API keys with more power (they
  -- may still hold the secrets) and invitations they could no longer send.
  perform app_private.revoke_member_grants(v_target.user_id, v_tenant_id, v_role);
  return v_target;
end;
$$;

comment on function app_public.change_member_role(uuid, text) is 'Changes the role of a member of the current tenant; it applies to their very next request. Owners and admins, logged in (not with an API key); only owners can make someone an owner or change the role of an owner, and the last owner cannot be demoted. Setting the role a member already has changes nothing. On a demotion, the API keys the member created with a role above the new one are revoked (they may still hold the secrets), and so are the pending invitations they could no longer send. Errors: 22023 unknown role; 42501 not allowed, or the last owner; P0002 not a member of this tenant.';

grant execute on function app_public.change_member_role(uuid, text) to :DATABASE_VISITOR;
--! EndIncluded identity/change_member_role.sql
--! Included identity/send_account_notice.sql
create or replace function app_private.send_account_notice(user_id uuid, to_email text, subject text, body_text text) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
begin
  -- Account email, not a tenant's: no tenant_id, so no request can read it in the outbox.
  perform app_private.queue_email(null, send_account_notice.to_email, send_account_notice.subject,
    send_account_notice.body_text
      || E'\n\nIf this was not you, reset your password at once (requestPasswordReset), and review your sessions and the API keys of your businesses.\n',
    'transactional', from_name => 'Switchboard');
end;
$$;

comment on function app_private.send_account_notice(uuid, text, text, text) is 'Emails a user a notice about their account (password changed, email address changed or about to change) through the outbox, as an account email with no tenant so that no request can read it. The body ends with what to do if it was not them. user_id names whom it is about (for callers and readers); to_email is where it goes, which for an address change is the old address. No permission checks: callers check.';
--! EndIncluded identity/send_account_notice.sql
