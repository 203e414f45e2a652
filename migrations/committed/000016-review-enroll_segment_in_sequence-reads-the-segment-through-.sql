--! Previous: sha1:25c08221c93cc7818752ccd962de4085e1de4865
--! Hash: sha1:a4bdeeaaab2af2b7a10272d8746258887ff8a705
--! Message: Review: enroll_segment_in_sequence reads the segment through find_leads instead of another copy of the compiled filter

-- Migration 000016 (review): enroll_segment_in_sequence reads the segment's leads through find_leads
-- instead of a fifth copy of the compiled filter and its sixteen parameters.

create or replace function app_public.enroll_segment_in_sequence(sequence_id uuid, segment_id uuid default null) returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  v_tenant_id uuid := app_private.require_tenant_role('agent', 'enroll leads in nurture sequences');
  v_segment app_public.segments;
  v_lead uuid;
  v_count integer := 0;
begin
  select sg.* into v_segment from app_public.segments sg
  where sg.tenant_id = v_tenant_id
    and sg.id = coalesce(enroll_segment_in_sequence.segment_id,
      (select s.enroll_segment_id from app_public.nurture_sequences s where s.tenant_id = v_tenant_id and s.id = enroll_segment_in_sequence.sequence_id));
  if not found then
    raise exception 'No segment to enroll: give segment_id, or set the enroll segment of the sequence' using errcode = 'P0002';
  end if;
  -- The segment's leads as find_leads gives them (the filter of the tenant of the caller, compiled once).
  for v_lead in
    select l.id from app_public.find_leads(v_segment.filter) l order by l.created_at, l.id
  loop
    begin
      if (app_private.enroll_lead(v_tenant_id, enroll_segment_in_sequence.sequence_id, v_lead, 'segment', app_public.current_user_id())).id is not null then
        v_count := v_count + 1;
      end if;
    exception when sqlstate 'SB001' then
      null;  -- on the do-not-contact list: left out
    when sqlstate '22023' then
      if not exists (select 1 from app_public.nurture_sequences s where s.tenant_id = v_tenant_id and s.id = enroll_segment_in_sequence.sequence_id and s.status = 'active') then
        raise;
      end if;
      -- a lead with a final status: left out
    end;
  end loop;
  return v_count;
end;
$$;
comment on function app_public.enroll_segment_in_sequence(uuid, uuid) is $$Enrolls every lead that matches the segment now (default: the enroll segment of the sequence) and returns how many were enrolled; leads already in the sequence, on the do-not-contact list or with a final status are left out. To also enroll leads as they come to match, set enroll_new_segment_matches on the sequence. Errors: P0002 no such segment or sequence; 22023 the sequence is paused or archived; 42501 not a member.$$;
