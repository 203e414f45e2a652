--! Previous: sha1:eb86d0e78784e4e7e89638d3a7a3dff44c82a8f4
--! Hash: sha1:25c08221c93cc7818752ccd962de4085e1de4865
--! Message: Review: advance_clock_to moves a tenant clock to a moment (one function instead of the interval arithmetic in each test and the benchmark); the Message-ID of an email is unique per tenant

-- Migration 000015 (review of 000012-000014): moving a tenant clock to a given moment is one function
-- (tests and the benchmark each computed the interval themselves), and the Message-ID of an email is
-- unique per tenant, like every other key of tenant data.

drop function if exists app_private.advance_clock_to(uuid, timestamptz);

create function app_private.advance_clock_to(tenant_id uuid, target timestamptz) returns timestamptz
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if advance_clock_to.target is null then
    raise exception 'The moment to move the clock to is required' using errcode = '22023';
  end if;
  if advance_clock_to.target > app_hidden.clock_now(advance_clock_to.tenant_id) then
    return app_private.advance_clock(advance_clock_to.tenant_id, advance_clock_to.target - app_hidden.clock_now(advance_clock_to.tenant_id));
  end if;
  return app_hidden.clock_now(advance_clock_to.tenant_id);
end;
$$;
comment on function app_private.advance_clock_to(uuid, timestamptz) is 'Moves the clock of one tenant forward until it shows target (nothing when it already shows that or later: a clock does not run backwards) and wakes what became due, through advance_clock. Owner role only. Returns the clock time of the tenant. Errors: 22023 no target, or more than ten years ahead; P0002 no such tenant.';

alter table app_public.email_messages drop constraint if exists email_messages_message_id_header_must_be_unique;
alter table app_public.email_messages drop constraint if exists email_messages_message_id_header_must_be_unique_per_tenant;
alter table app_public.email_messages add constraint email_messages_message_id_header_must_be_unique_per_tenant unique (tenant_id, message_id_header);
