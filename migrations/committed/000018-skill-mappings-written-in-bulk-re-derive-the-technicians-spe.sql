--! Previous: sha1:306b689bba98612bc5466223f2e311c76fa56401
--! Hash: sha1:5267b313e317d2d1617803910c1b699480ea1839
--! Message: Skill mappings written in bulk re-derive the technicians' specializations once per statement (statement-level triggers with transition tables), not once per row

-- Migration 000018: a skill mapping written in bulk re-derives the technicians' specializations once
-- per statement, not once per row. An owner pasting 40 mappings used to rebuild every technician of
-- the tenant 40 times in one transaction; now the statement-level triggers read the changed rows from
-- their transition tables and rebuild each affected tenant once.

drop trigger if exists _900_resync_technicians on app_public.service_titan_skill_lines;
drop trigger if exists _900_resync_technicians_after_insert on app_public.service_titan_skill_lines;
drop trigger if exists _900_resync_technicians_after_update on app_public.service_titan_skill_lines;
drop trigger if exists _900_resync_technicians_after_delete on app_public.service_titan_skill_lines;

create or replace function app_private.tg_service_titan_skill_lines__resync() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenants uuid[];
begin
  -- Each trigger has only the transition tables of its event: read only those.
  if TG_OP = 'INSERT' then
    select pg_catalog.array_agg(distinct n.tenant_id) into v_tenants from changed_new n;
  elsif TG_OP = 'DELETE' then
    select pg_catalog.array_agg(distinct o.tenant_id) into v_tenants from changed_old o;
  else
    select pg_catalog.array_agg(distinct x.tenant_id) into v_tenants
      from (select n.tenant_id from changed_new n union select o.tenant_id from changed_old o) x;
  end if;
  perform app_private.st_sync_technician_agents(t.tenant_id, pg_catalog.array_agg(t.id))
     from raw.st_technicians t
    where t.tenant_id = any (v_tenants)
    group by t.tenant_id;
  return null;
end;
$$;
comment on function app_private.tg_service_titan_skill_lines__resync() is 'Trigger (after each statement that inserts, updates or deletes skill mappings): re-derives the specializations of every technician of each tenant the statement touched, once per tenant, from the transition tables changed_new and changed_old.';

create trigger _900_resync_technicians_after_insert after insert on app_public.service_titan_skill_lines
  referencing new table as changed_new
  for each statement execute function app_private.tg_service_titan_skill_lines__resync();
comment on trigger _900_resync_technicians_after_insert on app_public.service_titan_skill_lines is 'New skill mappings: the tenant’s technicians get the specializations they now imply, once per statement.';
create trigger _900_resync_technicians_after_update after update on app_public.service_titan_skill_lines
  referencing old table as changed_old new table as changed_new
  for each statement execute function app_private.tg_service_titan_skill_lines__resync();
comment on trigger _900_resync_technicians_after_update on app_public.service_titan_skill_lines is 'Changed skill mappings (a skill moved to another service line, or to another tenant by a superuser): both tenants are re-derived, once per statement.';
create trigger _900_resync_technicians_after_delete after delete on app_public.service_titan_skill_lines
  referencing old table as changed_old
  for each statement execute function app_private.tg_service_titan_skill_lines__resync();
comment on trigger _900_resync_technicians_after_delete on app_public.service_titan_skill_lines is 'Removed skill mappings: the specializations they implied disappear, once per statement.';
